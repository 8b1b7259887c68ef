"""The fault catalogue's cases: each bad input or fault, the command that meets it, and what the user must see.

`tests/test_fault_catalogue.py` runs them (see its docstring for what every case must satisfy); README's
"Bad inputs and faults" table is made from this list. The workspaces and faults they use are in
`fault_workspaces.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fault_workspaces import (DISK_FULL, DISK_FULL_CHECKPOINT, NAN_LOSS, READ_ONLY_STORE,
                             checkpoint_other_architecture, checkpoint_other_width, checkpoint_pickled_object,
                             corrupt_manifest, corrupt_store, drop_section, edit_shard, fashion_missing_file,
                             fashion_truncated_file, grid_is_a_directory, imagefolder_empty_class,
                             imagefolder_float_image, imagefolder_one_class, imagefolder_several_bad_files,
                             imagefolder_unreadable_image, label_12, real_labels_out_of_range, remove, tamper_shard,
                             too_few_shards, truncate, vae_checkpoint_as_gan)


@dataclass(frozen=True)
class Case:
    id: str
    fault: str
    args: tuple[str, ...]
    expect: str  # the error line contains this: it names the culprit (key, file, name)
    code: int  # 2 bad input, 1 runtime fault
    changes: dict[str, Any] = field(default_factory=dict)  # params.yaml keys changed from the smoke profile
    workspace: str = "empty"  # "empty": only params.yaml; "prepared": data/real, a VAE checkpoint, shards, fid_ref
    mutate: Callable | None = None  # changes the workspace; may return more params changes
    inject: str = ""
    env: dict[str, str] = field(default_factory=dict)
    covered: str = ""  # existing lower-level tests of the same fault ("" = new with this file)
    pending: str = ""  # the fix this case still needs (in files owned elsewhere): xfail(strict) until made


P = "prepared"
CATALOGUE: list[Case] = [
    # -- params.yaml, validated whole before any work
    Case("params-unknown-key", "unknown params key", ("prepare",), "params.yaml: unknown key 'vae.epochz' (did you "
         "mean 'vae.epochs'?)", 2, {"vae.epochz": 4}, covered="test_config, test_cli_errors"),
    Case("params-wrong-type", "wrong type", ("train", "vae"), "vae.epochs: expected int, got str 'ten'", 2,
         {"vae.epochs": "ten"}, covered="test_config, test_cli_errors"),
    Case("params-fraction-range", "fraction outside (0, 1]", ("classify", "real", "--fraction", "0.5"),
         "fractions[1]: a fraction must be in (0, 1], got 1.5", 2, {"fractions": [0.5, 1.5]},
         covered="test_config, test_cli_errors"),
    Case("params-negative-beta", "negative beta", ("sample", "vae"), "beta: must be >= 0, got -1.0", 2,
         {"beta": -1.0}, covered="test_config, test_cli_errors"),
    Case("params-steps-zero", "training steps out of range", ("train", "gan"), "gan.steps: must be >= 1, got 0", 2,
         {"gan.steps": 0}),
    Case("params-batch-size-range", "batch size out of range", ("classify", "real", "--fraction", "0.5"),
         "classify.model.batch_size: must be >= 2, got 1", 2, {"classify.model.batch_size": 1}),
    Case("params-batch-larger-than-data", "batch size larger than the training set", ("train", "vae"),
         "vae.batch_size: 5000 exceeds the 721 training images", 2, {"vae.batch_size": 5000}, P),
    Case("params-fid-count", "FID sample count not above its dims", ("fid-ref",),
         "fid.num_images: FID with dims=64 needs at least 65 images", 2, {"fid.num_images": 64},
         covered="test_config"),
    Case("params-missing-file", "params file missing", ("prepare", "--params", "nope.yaml"),
         "nope.yaml: params file not found", 2, covered="test_config"),
    Case("params-invalid-yaml", "params file not YAML", ("prepare",), "params.yaml: not valid YAML at line", 2,
         mutate=lambda ws: (ws / "params.yaml").write_text("seed: 0\nbeta: [1.0,\n"), covered="test_config"),
    Case("params-seed-range", "seed beyond numpy's 32 bits (crashed every stage)", ("sample", "vae"),
         "params.yaml: seed: must be < 4294967296, got 18446744073709551616", 2, {"seed": 2**64}),
    Case("params-classify-seed-range", "a classify seed beyond 32 bits", ("prepare",),
         "params.yaml: classify.seeds[1]: must be < 4294967296", 2, {"classify.seeds": [0, 2**40]}),
    Case("params-image-size-generators", "an image size a generator cannot take (failed at train)", ("train", "gan"),
         "params.yaml: dataset.image_size: 28 does not fit every generator: vae needs a multiple of 8; gan, lsgan and "
         "wgan_gp need a power of two", 2, {"dataset.image_size": 28}),
    Case("params-non-finite", "a non-finite number (beta: .inf; 1e309)", ("train", "vae"),
         "params.yaml: beta: must be a finite number, got inf", 2, {"beta": float("inf")}),
    Case("params-missing-section", "a params file without a whole section (ran on code defaults)", ("train", "vae"),
         "params.yaml: missing section 'vae'", 2, mutate=drop_section("vae")),
    Case("params-missing-study-seeds", "a params file without `study_seeds` (dvc.yaml's chain stages need it)",
         ("prepare",), "params.yaml: missing key 'study_seeds'", 2, mutate=drop_section("study_seeds")),
    Case("study-not-in-seeds", "`--study K` for a K not in `study_seeds`", ("train", "vae", "--study", "1"),
         "--study 1: not among study_seeds [0]", 2),
    Case("params-no-gpu", "device cuda on a machine without GPU", ("train", "vae"),
         "device 'cuda' requested but no CUDA GPU is available", 2, {"device": "cuda"}),
    # -- names on the command line
    Case("unknown-dataset", "unknown dataset name", ("fid-ref",), "dataset.name: must be one of", 2,
         {"dataset.name": "mnist"}, covered="test_config, test_cli_errors, test_data"),
    Case("unknown-family", "unknown generator family", ("train", "nope"), "unknown generator family 'nope'", 2,
         covered="test_cli_errors"),
    Case("unknown-source", "unknown source name", ("fid", "nope"), "unknown source 'nope'", 2,
         covered="test_cli_errors (sample)"),
    Case("unknown-source-in-arm", "unknown source in a classifier arm", ("classify", "synth:nope"),
         "arm 'synth:nope': source 'nope' is not in `sources`", 2, covered="test_cli_errors"),
    Case("fraction-not-in-arm", "--fraction the arm does not run at", ("classify", "real+vae", "--fraction", "0.25"),
         "--fraction 0.25: arm 'real+vae' does not run there", 2, workspace=P),
    Case("classify-seed-not-in-seeds", "--seed -1 (or any seed not in classify.seeds)", ("classify", "real", "--seed",
         "-1"), "--seed -1: not among classify.seeds [0, 1]", 2),
    Case("classify-huge-seed", "--seed 2**64", ("classify", "real", "--seed", str(2**64)),
         f"--seed {2**64}: not among classify.seeds [0, 1]", 2),
    Case("fraction-for-synthetic-arm", "--fraction for a synthetic-only arm (was ignored)",
         ("classify", "synth:vae", "--fraction", "0.5"), "arm 'synth:vae' uses no real data: drop --fraction", 2),
    Case("fraction-not-prepared", "a fraction `prepare` has not written", ("classify", "real", "--fraction", "0.3"),
         "--fraction 0.3: not among the prepared fractions", 2, {"real_fractions": [0.25, 0.3]}, workspace=P),
    Case("params-generator-leak", "mixed arms below the generators' subset", ("classify", "real+vae"),
         "fractions: 0.25 is below generator_fraction 0.5", 2, {"fractions": [0.25, 0.5]}),
    # -- dataset files
    Case("dataset-file-missing", "a Fashion-MNIST file missing", ("prepare",), "t10k-labels-idx1-ubyte(.gz): missing",
         2, mutate=fashion_missing_file, covered="test_data"),
    Case("dataset-file-truncated", "a truncated Fashion-MNIST file", ("prepare",),
         "t10k-images-idx3-ubyte: truncated or oversized IDX", 2, mutate=fashion_truncated_file, covered="test_data"),
    Case("imagefolder-empty-class", "image folder with an empty class", ("prepare",),
         "train/bird: empty class folder", 2, mutate=imagefolder_empty_class, covered="test_data"),
    Case("imagefolder-unreadable", "image folder with an unreadable image", ("prepare",),
         "train/dog/2.png: unreadable image", 2, mutate=imagefolder_unreadable_image, covered="test_data"),
    Case("imagefolder-several-bad-files", "image folder with several bad files (only the first was named)",
         ("prepare",), "2 unusable image file(s): ", 2, mutate=imagefolder_several_bad_files),
    Case("params-digits-root", "dataset.root given for digits (silently ignored)", ("prepare",),
         "params.yaml: dataset.root: the digits dataset ships with scikit-learn and reads no folder", 2,
         {"dataset.root": "/tmp/somewhere"}),
    Case("imagefolder-one-class", "image folder with a single class", ("prepare",),
         "1 class (cat); a classification study needs at least 2", 2, mutate=imagefolder_one_class),
    Case("imagefolder-float-image", "image folder with a float (mode F) image", ("prepare",),
         "train/dog/x.tiff: float image (mode F) has no defined value range", 2, mutate=imagefolder_float_image),
    # -- files between stages
    Case("prepared-missing", "stage run before `prepare`", ("train", "vae"),
         "data/real: not found (run the `prepare` stage first", 2),
    Case("prepared-truncated", "truncated prepared split", ("train", "vae"),
         "data/real/train.npz: corrupt or truncated npz", 2, workspace=P, mutate=truncate("data/real/train.npz"),
         covered="test_storage"),
    Case("prepared-labels-range", "labels outside the class range (real split)", ("train", "vae"),
         "data/real/train.npz: label 10 out of range [0, 10)", 2, workspace=P, mutate=real_labels_out_of_range,
         covered="test_data"),
    Case("checkpoint-missing", "sampling before training", ("sample", "vae"),
         "models/study0/vae/checkpoint.pt: not found (run the `train_vae@0` stage first", 2, workspace=P,
         mutate=remove("models/study0/vae")),
    Case("invert-before-diffusion", "inversion before the diffusion model exists", ("invert",),
         "models/study0/diffusion/checkpoint.pt: not found (run the `train_diffusion@0` stage first", 2,
         workspace=P),
    Case("dinv-before-invert", "sampling dinv before inversion", ("sample", "dinv"),
         "models/study0/dinv/checkpoint.pt: not found (run the `invert@0` stage first", 2, workspace=P),
    Case("train-derived-family", "`train dinv` (made by `invert`, not trained)", ("train", "dinv"),
         "unknown generator family 'dinv'", 2),
    Case("checkpoint-truncated", "truncated checkpoint", ("sample", "vae"),
         "models/study0/vae/checkpoint.pt: corrupt, truncated or unsafe checkpoint", 2, workspace=P,
         mutate=truncate("models/study0/vae/checkpoint.pt"), covered="test_storage"),
    Case("checkpoint-pickled-code", "checkpoint holding pickled code", ("sample", "vae"),
         "models/study0/vae/checkpoint.pt: corrupt, truncated or unsafe checkpoint (UnpicklingError)", 2, workspace=P,
         mutate=checkpoint_pickled_object, covered="test_storage"),
    Case("checkpoint-other-family", "checkpoint of another architecture (GAN file as VAE)", ("sample", "vae"),
         "models/study0/vae/checkpoint.pt: holds a 'gan' model, not 'vae'", 2, workspace=P,
         mutate=checkpoint_other_architecture),
    Case("checkpoint-other-family-gan", "checkpoint of another architecture (VAE file as GAN)", ("sample", "gan"),
         "models/study0/gan/checkpoint.pt: holds a 'vae' model, not 'gan'", 2, workspace=P,
         mutate=vae_checkpoint_as_gan),
    Case("checkpoint-other-shape", "checkpoint weights of another size", ("sample", "vae"),
         "models/study0/vae/checkpoint.pt: checkpoint does not match this architecture", 2, workspace=P,
         mutate=checkpoint_other_width, covered="test_storage"),
    Case("shard-sha256", "shard whose sha256 does not match its manifest", ("classify", "synth:vae"),
         "data/synthetic/study0/vae/shard-00001.npz: sha256 does not match", 2, workspace=P, mutate=tamper_shard,
         covered="test_storage"),
    Case("shard-missing", "shard listed in the manifest but missing", ("fid", "vae"),
         "data/synthetic/study0/vae/shard-00002.npz: file not found", 2, workspace=P,
         mutate=remove("data/synthetic/study0/vae/shard-00002.npz"), covered="test_storage"),
    Case("shard-labels-range", "labels outside the class range (synthetic shards)", ("classify", "synth:vae"),
         "data/synthetic/study0/vae: labels outside [0, 10) (found 0..12)", 2, workspace=P,
         mutate=edit_shard(label_12)),
    Case("shard-float-labels", "float labels in a shard (were truncated to int)", ("classify", "synth:vae"),
         "data/synthetic/study0/vae/shard-00000.npz: labels must be a 1-D integer array, got float64 [128]", 2,
         workspace=P, mutate=edit_shard(lambda x, y: (x, y + 0.5))),
    Case("shard-2d-labels", "2-D labels in a shard", ("fid", "vae"),
         "data/synthetic/study0/vae/shard-00000.npz: labels must be a 1-D integer array, got int64 [128, 1]", 2,
         workspace=P, mutate=edit_shard(lambda x, y: (x, y[:, None]))),
    Case("shard-uint16-images", "a uint16 image shard (was trained on)", ("classify", "synth:vae"),
         "data/synthetic/study0/vae/shard-00000.npz: images must be uint8 [N,32,32,1] as the manifest says, got "
         "uint16", 2, workspace=P, mutate=edit_shard(lambda x, y: (x.astype(np.uint16) * 257, y))),
    Case("shard-other-size", "a shard of images of another size (a NumPy concatenate traceback)", ("fid", "vae"),
         "data/synthetic/study0/vae/shard-00000.npz: images must be uint8 [N,32,32,1] as the manifest says, got uint8 "
         "[128, 28, 28, 1]", 2, workspace=P, mutate=edit_shard(lambda x, y: (x[:, :28, :28], y))),
    Case("manifest-corrupt", "corrupt shard manifest", ("fid", "vae"),
         "data/synthetic/study0/vae/manifest.json: not valid JSON", 2, workspace=P, mutate=corrupt_manifest,
         covered="test_storage"),
    Case("fid-too-few-samples", "fewer samples than FID needs", ("fid", "vae"),
         "FID at dims=64 needs at least dims+1 images (65) for a non-singular covariance, got 50", 2, workspace=P,
         mutate=too_few_shards, covered="test_fid"),
    Case("fid-ref-truncated", "truncated FID reference statistics", ("fid", "vae"),
         "data/fid_ref.npz: corrupt or truncated npz", 2, workspace=P, mutate=truncate("data/fid_ref.npz")),
    # -- runtime faults (exit 1)
    Case("nan-loss", "the loss becomes NaN (injected)", ("train", "vae"),
         "NonFiniteLossError: loss loss, recon, kl became nan at step 0", 1, workspace=P, inject=NAN_LOSS,
         covered="test_training, test_gan"),
    Case("disk-full-outputs", "disk full while writing the prepared data (ENOSPC injected)", ("prepare",),
         "data/real/train.npz: cannot write (No space left on device)", 1, workspace=P, inject=DISK_FULL),
    Case("disk-full-checkpoint", "disk full while writing a checkpoint (ENOSPC injected)", ("train", "vae"),
         "models/study0/vae/checkpoint.pt: cannot write (No space left on device)", 1, {"vae.epochs": 1}, P,
         mutate=remove("models/study0/vae"), inject=DISK_FULL_CHECKPOINT),
    Case("mlflow-unreachable", "MLFLOW_TRACKING_URI server unreachable", ("prepare",),
         "TrackingError: MLFLOW_TRACKING_URI=http://***@127.0.0.1:9 is unreachable", 1,
         env={"MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9"}, covered="test_tracking"),
    Case("mlflow-read-only", "the MLflow store cannot be written (a read-only sqlite file)", ("prepare",),
         "TrackingError: cannot write to MLflow store sqlite:///", 1, inject=READ_ONLY_STORE),
    Case("mlflow-corrupt", "a corrupt mlflow.db (\"database disk image is malformed\")", ("prepare",),
         "mlflow.db: corrupt MLflow store (DatabaseError: database disk image is malformed); move it aside", 1,
         mutate=corrupt_store, env={"MLFLOW_TRACKING_URI": ""}),
    Case("sample-grid-unwritable", "one of `sample`'s outputs cannot be written (its grid path is a folder)",
         ("sample", "vae"),
         "WriteError: reports/grids/study0/vae.png: cannot write (Is a directory); nothing was replaced", 1,
         workspace=P, mutate=grid_is_a_directory),
    Case("mlflow-bad-uri", "MLFLOW_TRACKING_URI of an unusable kind", ("prepare",),
         "TrackingError: cannot use MLflow store nosuch://store", 1, env={"MLFLOW_TRACKING_URI": "nosuch://store"}),
]
