"""params.yaml: its schema, and validation before any work is done.

Each section is a dataclass; a field's `metadata` carries its range or its allowed values. Loading checks
every key (unknown keys, wrong types, out-of-range values) and raises `ConfigError` with one line naming
the key. The file is validated whole by every stage, so a typo fails the first stage that runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthaug.core.schema import ConfigError, build, require_sections, rng

DATASETS = ("fashion_mnist", "digits", "cifar10", "cub200", "imagefolder")
SOURCES = ("vae", "gan", "lsgan", "wgan_gp", "ddpm", "ddim", "dinv")  # `real+all` pools every listed source
SEED_LIMIT = 2**32  # numpy's seeds; `sample` derives seed * 1_000_003 + batch, which then stays inside int64
@dataclass
class DatasetParams:
    name: str = field(default="fashion_mnist", metadata=rng(choices=DATASETS))
    root: str | None = None  # None: the dataset's default place (Debian package, torchvision cache)
    image_size: int = field(default=32, metadata=rng(ge=8, le=256))

    def check(self, at: str) -> None:
        if self.name == "digits" and self.root is not None:  # it would be ignored without a word
            raise ConfigError(f"{at}.root: the digits dataset ships with scikit-learn and reads no folder; "
                              f"set it to null (got {self.root!r})")


@dataclass
class VAEParams:
    latent_dim: int = field(default=64, metadata=rng(ge=1, le=4096))
    base_channels: int = field(default=32, metadata=rng(ge=4, le=512))
    epochs: int = field(default=10, metadata=rng(ge=1))
    beta_anneal_epochs: float = field(default=3.0, metadata=rng(ge=0))  # 0: beta from the first step
    batch_size: int = field(default=128, metadata=rng(ge=1, le=65536))
    lr: float = field(default=1e-3, metadata=rng(gt=0, le=1))
    max_train_images: int = field(default=0, metadata=rng(ge=0))  # 0: all; >0 caps (smoke/tests)
    checkpoint_every: int = field(default=500, metadata=rng(ge=1))
    log_every: int = field(default=50, metadata=rng(ge=1))


@dataclass
class GANParams:
    """One section per adversarial objective (`gan`, `lsgan`, `wgan_gp`): the nets are shared."""

    width: int = field(default=64, metadata=rng(ge=8, le=1024))
    z_dim: int = field(default=128, metadata=rng(ge=1, le=4096))
    steps: int = field(default=2000, metadata=rng(ge=1))  # generator steps
    batch_size: int = field(default=64, metadata=rng(ge=2, le=65536))
    lr_g: float = field(default=2e-4, metadata=rng(gt=0, le=1))
    lr_d: float = field(default=2e-4, metadata=rng(gt=0, le=1))
    beta1: float = field(default=0.0, metadata=rng(ge=0, lt=1))
    beta2: float = field(default=0.9, metadata=rng(ge=0, lt=1))
    n_critic: int = field(default=1, metadata=rng(ge=1, le=100))  # D steps per G step
    gp_lambda: float = field(default=10.0, metadata=rng(ge=0))  # used by wgan_gp only
    # wgan_gp only: the penalty on every gp_every-th critic update, weighted gp_lambda * gp_every ("lazy
    # regularisation", Karras et al. 2020, StyleGAN2 §3.1); 1 = every update (Gulrajani et al. 2017).
    gp_every: int = field(default=1, metadata=rng(ge=1, le=100))
    spectral_norm: bool = True
    lr_decay: bool = True  # linear decay to 0 over `steps`
    ema_decay: float = field(default=0.999, metadata=rng(ge=0, lt=1))
    max_train_images: int = field(default=0, metadata=rng(ge=0))
    checkpoint_every: int = field(default=500, metadata=rng(ge=1))
    log_every: int = field(default=50, metadata=rng(ge=1))


@dataclass
class DiffusionParams:
    base_channels: int = field(default=64, metadata=rng(ge=8, le=1024))
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = field(default=2, metadata=rng(ge=1, le=8))
    attn_resolutions: list[int] = field(default_factory=lambda: [8])
    dropout: float = field(default=0.1, metadata=rng(ge=0, lt=1))
    timesteps: int = field(default=1000, metadata=rng(ge=2, le=10000))  # T
    schedule: str = field(default="cosine", metadata=rng(choices=("linear", "cosine")))
    label_dropout: float = field(default=0.1, metadata=rng(ge=0, lt=1))  # for classifier-free guidance
    prediction: str = field(default="eps", metadata=rng(choices=("eps", "v")))  # the network's training target
    code_dim: int = field(default=0, metadata=rng(ge=0, le=1024))  # >0: per-image code from an encoder (nets.unet)
    code_dropout: float = field(default=0.5, metadata=rng(ge=0, le=1))  # share of images trained without their code
    steps: int = field(default=5000, metadata=rng(ge=1))
    batch_size: int = field(default=64, metadata=rng(ge=1, le=65536))
    lr: float = field(default=2e-4, metadata=rng(gt=0, le=1))
    warmup_steps: int = field(default=200, metadata=rng(ge=0))  # linear LR warm-up
    ema_decay: float = field(default=0.999, metadata=rng(ge=0, lt=1))
    max_train_images: int = field(default=0, metadata=rng(ge=0))
    checkpoint_every: int = field(default=500, metadata=rng(ge=1))
    log_every: int = field(default=50, metadata=rng(ge=1))


@dataclass
class DDPMSamplerParams:
    guidance_scale: float = field(default=1.0, metadata=rng(ge=0))  # 1: plain conditional sampling
    compile: bool = False  # torch.compile the U-Net for sampling (falls back with a warning)


@dataclass
class DDIMSamplerParams:
    steps: int = field(default=50, metadata=rng(ge=1, le=10000))
    eta: float = field(default=0.0, metadata=rng(ge=0, le=1))
    guidance_scale: float = field(default=1.0, metadata=rng(ge=0))
    compile: bool = False


@dataclass
class InvertParams:
    """Diffusion Inversion (Zhou et al. 2023): one conditioning vector learned per group of real training images
    of a class, with the trained diffusion model frozen (stage `invert`)."""

    group_size: int = field(default=10, metadata=rng(ge=1, le=65536))  # images per embedding; 1: one per image
    groups_per_class: int = field(default=20, metadata=rng(ge=0))  # 0: every training image, in groups
    steps: int = field(default=1000, metadata=rng(ge=1))
    batch_size: int = field(default=64, metadata=rng(ge=1, le=65536))
    lr: float = field(default=0.01, metadata=rng(gt=0, le=10))
    checkpoint_every: int = field(default=250, metadata=rng(ge=1))
    log_every: int = field(default=50, metadata=rng(ge=1))
    preview_groups: int = field(default=1, metadata=rng(ge=0, le=16))  # per class, in the real-vs-sample grid
    preview_steps: int = field(default=25, metadata=rng(ge=1, le=10000))  # DDIM steps of that grid
    # samples per group and conditioning for the "follows its group" figure (DDIM with the `ddim` steps); 0: skip
    follow_samples: int = field(default=8, metadata=rng(ge=0, le=4096))
    # how a class's images form groups: look_alike (nearest in the frozen U-Net's code space, or in pixels when it
    # has no codes) or random; a random group shares little more than its class, so its vector has nothing to follow
    grouping: str = field(default="look_alike", metadata=rng(choices=("look_alike", "random")))
    # where a vector starts: group (the mean code of its images, from the frozen U-Net's encoder; needs
    # diffusion.code_dim > 0, as every shipped profile sets) or class (the class point, where code dropout taught the
    # U-Net "any of the class"); class here, so that this dataclass's defaults (code_dim 0) stay a valid study
    init: str = field(default="class", metadata=rng(choices=("group", "class")))


@dataclass
class DInvSamplerParams:
    """Sampling source `dinv` from the learned embeddings; the DDIM settings (steps, eta, compile) are `ddim`'s,
    so dinv and ddim differ only in their conditioning."""

    noise_scale: float = field(default=0.1, metadata=rng(ge=0))  # lambda in c + lambda * N(0, I)
    interpolation: float = field(default=0.5, metadata=rng(ge=0, le=1))  # share of samples mixing two embeddings
    guidance_scale: float = field(default=1.0, metadata=rng(ge=0))  # unconditional = the mean learned embedding


@dataclass
class SampleParams:
    per_class: int = field(default=500, metadata=rng(ge=1))
    shard_size: int = field(default=2500, metadata=rng(ge=1))
    batch_size: int = field(default=500, metadata=rng(ge=1))
    grid_per_class: int = field(default=10, metadata=rng(ge=1, le=64))


@dataclass
class FIDParams:
    split: str = field(default="test", metadata=rng(choices=("train", "test")))
    num_images: int = field(default=2500, metadata=rng(ge=2))
    dims: int = field(default=2048, metadata=rng(choices=(64, 192, 768, 2048)))
    batch_size: int = field(default=50, metadata=rng(ge=1))
    # fp32 by default: bf16 Inception moved a high FID by 1.3 % (issue 18's measurement), beyond the 0.5 %
    # agreement with `python -m pytorch_fid` we promise; `runtime` follows the top-level `precision`.
    precision: str = field(default="fp32", metadata=rng(choices=("fp32", "runtime")))

    def check(self, at: str) -> None:
        if self.num_images <= self.dims:
            raise ConfigError(f"{at}.num_images: FID with dims={self.dims} needs at least {self.dims + 1} images "
                              f"(a smaller sample has a singular covariance), got {self.num_images}")


@dataclass
class ClassifierParams:
    """How one classifier trains: identical for every arm of a fraction (DESIGN §1 fairness)."""

    arch: str = field(default="resnet20", metadata=rng(choices=("resnet8", "resnet20", "resnet32", "resnet18")))
    steps: int = field(default=600, metadata=rng(ge=1))
    batch_size: int = field(default=128, metadata=rng(ge=2, le=65536))
    lr: float = field(default=0.1, metadata=rng(gt=0, le=10))
    weight_decay: float = field(default=5e-4, metadata=rng(ge=0))
    augment: str = field(default="crop_flip", metadata=rng(choices=("crop_flip", "crop", "none")))
    eval_batch_size: int = field(default=500, metadata=rng(ge=1))
    log_every: int = field(default=50, metadata=rng(ge=1))


@dataclass
class ClassifyParams:
    seeds: list[int] = field(default_factory=lambda: [0], metadata=rng(ge=0, lt=SEED_LIMIT))
    synthetic_ratio: float = field(default=0.5, metadata=rng(ge=0, le=1))  # share of synthetic images per batch
    # Runs of a classify stage trained as one bank (nets/bank.py). 0: auto, all of them on a GPU, one at a time on
    # a CPU (benchmarks/classifier_bank.py: banks ran slower there). Like `device`, it changes how the runs are
    # computed, not what they are: a member equals its run trained alone up to rounding.
    bank_size: int = field(default=0, metadata=rng(ge=0, le=100_000))
    model: ClassifierParams = field(default_factory=ClassifierParams)

    def check(self, at: str) -> None:
        if not self.seeds:
            raise ConfigError(f"{at}.seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{at}.seeds: seeds must be distinct")


@dataclass
class AnalysisParams:
    """Stage `analyse`, beside FID: precision / recall, density / coverage, per-class KID (FID where a class is large
    enough) on the fid stages' Inception features, and line-segment geometry against real test images."""

    nearest_k: int = field(default=5, metadata=rng(ge=1, le=1000))  # k of the k-NN balls (Naeem et al. 2020: 5)
    kid_subsets: int = field(default=10, metadata=rng(ge=1, le=1000))  # per-class KID: random subsets per class
    kid_subset_size: int = field(default=100, metadata=rng(ge=2))  # images per subset, capped at the class's count
    line_images_per_class: int = field(default=250, metadata=rng(ge=1))  # per class and side, for line geometry
    orientation_bins: int = field(default=12, metadata=rng(ge=2, le=360))  # over [0, pi)
    length_bins: int = field(default=8, metadata=rng(ge=2, le=256))  # over [0, the image diagonal]
    # coverage and recall of this many disjoint class-balanced parts of a source's images (independent draws of its
    # sampler): their spread says how far one draw's figure can move; 0 or 1: no parts
    coverage_splits: int = field(default=5, metadata=rng(ge=0, le=100))


@dataclass
class GradCamParams:
    """Stage `gradcam`: where each arm's classifier (first fraction, first seed) looks on fixed real test images."""

    images_per_class: int = field(default=50, metadata=rng(ge=1))  # seeded test images per class the figures average
    grid_per_class: int = field(default=1, metadata=rng(ge=1, le=10))  # of those, shown per class in the grids
    mask_threshold: float = field(default=0.1, metadata=rng(gt=0, lt=1))  # object: pixels above this x the maximum


@dataclass
class Params:
    # The picks every study seed shares: the FID reference images, the test images the analyses look at. Inside a
    # chain stage (`--study K`) it is that chain's study seed (`with_study`).
    seed: int = field(default=0, metadata=rng(ge=0, lt=SEED_LIMIT))
    # One whole chain per study seed (DESIGN §1): its own nested real subsets, generators, inversion, samples and
    # classifiers (classify.seeds inside it), so the report's interval can cover the generators' randomness.
    study_seeds: list[int] = field(default_factory=lambda: [0], metadata=rng(ge=0, lt=SEED_LIMIT))
    device: str = "auto"
    precision: str = field(default="auto", metadata=rng(choices=("auto", "bf16", "fp32")))
    beta: float = field(default=1.0, metadata=rng(ge=0))  # the VAE's KL weight, top-level for `-S beta=...`
    # The study's fractions: every arm (real, real+S, synth:S, real+all) runs at each of them.
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    # Extra fractions for the `real` arm alone: the real-only learning curve (ceiling, sample efficiency).
    real_fractions: list[float] = field(default_factory=list)
    # The nested real subset the generators and inversion train on (DESIGN §1: no leakage). 1.0 is the explicit
    # "generators saw every real training image" setting, which the report labels wherever it is used.
    generator_fraction: float = field(default=1.0, metadata=rng(gt=0, le=1))
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    dataset: DatasetParams = field(default_factory=DatasetParams)
    vae: VAEParams = field(default_factory=VAEParams)
    gan: GANParams = field(default_factory=GANParams)
    lsgan: GANParams = field(default_factory=GANParams)
    wgan_gp: GANParams = field(default_factory=lambda: GANParams(n_critic=5))
    diffusion: DiffusionParams = field(default_factory=DiffusionParams)
    ddpm: DDPMSamplerParams = field(default_factory=DDPMSamplerParams)
    ddim: DDIMSamplerParams = field(default_factory=DDIMSamplerParams)
    invert: InvertParams = field(default_factory=InvertParams)
    dinv: DInvSamplerParams = field(default_factory=DInvSamplerParams)
    sample: SampleParams = field(default_factory=SampleParams)
    fid: FIDParams = field(default_factory=FIDParams)
    classify: ClassifyParams = field(default_factory=ClassifyParams)
    analysis: AnalysisParams = field(default_factory=AnalysisParams)
    gradcam: GradCamParams = field(default_factory=GradCamParams)
    # >1: the training stages (train, invert, classify) run data-parallel under torchrun with this many processes
    # (one per GPU, NCCL; gloo on CPU); every global batch is split evenly between them (`synthaug.core.distributed`)
    processes: int = field(default=1, metadata=rng(ge=1, le=1024))

    def check(self, at: str) -> None:
        if not self.study_seeds:
            raise ConfigError("study_seeds: give at least one study seed")
        if len(set(self.study_seeds)) != len(self.study_seeds):
            raise ConfigError("study_seeds: seeds must be distinct")
        if not self.fractions:
            raise ConfigError("fractions: give at least one fraction")
        for i, f in enumerate(self.fractions):
            if not 0 < f <= 1:
                raise ConfigError(f"fractions[{i}]: a fraction must be in (0, 1], got {f}")
        if len(set(self.fractions)) != len(self.fractions):
            raise ConfigError("fractions: values must be distinct")
        for i, f in enumerate(self.real_fractions):
            if not 0 < f <= 1:
                raise ConfigError(f"real_fractions[{i}]: a fraction must be in (0, 1], got {f}")
        if len(set(self.real_fractions)) != len(self.real_fractions):
            raise ConfigError("real_fractions: values must be distinct")
        if self.generator_fraction < 1.0:
            leaking = [f for f in self.fractions if f < self.generator_fraction]
            if leaking:
                raise ConfigError(
                    f"fractions: {leaking[0]:g} is below generator_fraction {self.generator_fraction:g}: the "
                    "real+SOURCE arms there would use generators that saw real images their classifier was not "
                    "given (raise those fractions, lower generator_fraction, or set generator_fraction: 1.0 to "
                    "let generators see all real images, labelled as such in the report)")
        for i, s in enumerate(self.sources):
            if s not in SOURCES:
                raise ConfigError(f"sources[{i}]: unknown source '{s}' (known: {', '.join(SOURCES)})")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device: must be 'auto', 'cpu' or 'cuda[:N]', got '{self.device}'")
        self._check_image_size()
        if "dinv" in self.sources and self.invert.init == "group" and not self.diffusion.code_dim:
            # said here, before train_diffusion runs, not when `invert` starts on the finished model
            raise ConfigError("invert.init: group starts each vector at its images' mean code, and "
                              "diffusion.code_dim: 0 trains a U-Net without codes; use invert.init: class, "
                              "or give the U-Net codes")
        if self.processes > 1:
            for key, section in (("vae", self.vae), ("gan", self.gan), ("lsgan", self.lsgan),
                                 ("wgan_gp", self.wgan_gp), ("diffusion", self.diffusion), ("invert", self.invert),
                                 ("classify.model", self.classify.model)):
                if section.batch_size % self.processes:
                    raise ConfigError(f"{key}.batch_size: {section.batch_size} does not split evenly over "
                                      f"processes: {self.processes} (each process takes an equal share)")

    def _check_image_size(self) -> None:
        """Every generator family's constraint on the image size (their nets raise the same, but only at
        `train`): the VAE halves it 3 times, the GANs double from 4x4, the U-Net halves it per extra level."""
        s, levels = self.dataset.image_size, len(self.diffusion.channel_mult)
        if not levels:
            raise ConfigError("diffusion.channel_mult: give at least one level")
        unmet = [need for ok, need in ((s % 8 == 0, "vae needs a multiple of 8"),
                                       (s & (s - 1) == 0, "gan, lsgan and wgan_gp need a power of two"),
                                       (s % 2 ** (levels - 1) == 0,
                                        f"diffusion (channel_mult {self.diffusion.channel_mult}) needs a multiple "
                                        f"of {2 ** (levels - 1)}")) if not ok]
        if unmet:
            raise ConfigError(f"dataset.image_size: {s} does not fit every generator: {'; '.join(unmet)} "
                              "(e.g. 32 or 64)")


def with_study(params: Params, study: int) -> Params:
    """The params as one chain's stage sees them: `seed` is that chain's study seed (subsets, initial weights,
    batch order, samples all follow it). A study seed not in `study_seeds` is a ConfigError."""
    if study not in params.study_seeds:
        raise ConfigError(f"--study {study}: not among study_seeds {params.study_seeds}")
    return dataclasses.replace(params, seed=study)


def real_curve_fractions(params: Params) -> list[float]:
    """Every fraction the `real` arm runs at: the study's plus the extra points of the learning curve."""
    return sorted(set(params.fractions) | set(params.real_fractions))


def prepared_fractions(params: Params) -> list[float]:
    """Every nested subset `prepare` writes: the real curve's fractions and the generators' subset."""
    return sorted(set(real_curve_fractions(params)) | {params.generator_fraction})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raises ConfigError (one line, naming the key or file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if "study_seeds" not in raw:  # dvc.yaml makes one stage item per study seed from it
        raise ConfigError(f"{path}: missing key 'study_seeds' (dvc.yaml's chain stages run once per study seed; "
                          "e.g. `study_seeds: [0]`)")
    try:
        params = build(Params, raw, "")
        require_sections(Params, raw, "")
        return params
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)
