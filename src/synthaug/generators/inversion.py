"""Diffusion Inversion (Zhou et al. 2023, "Training on Thin Air"): steer a frozen diffusion model with learned
conditioning vectors, as source `dinv`.

The paper inverts groups of real images into a text encoder's embedding space of Stable Diffusion; here the
frozen model is our own class-conditional U-Net, and the space is the one its class embedding lives in (the
vector added to the time embedding, `UNet.cond_dim`). For each group of real training images of one class we
learn a vector c_g by minimising the ordinary noise-prediction loss E ||eps - eps_theta(x_t, t, c_g)||^2 over
the group's images, starting from the class's own embedding; nothing of the U-Net changes. When the U-Net was
trained with per-image codes (`diffusion.code_dim` > 0, see synthaug.nets.unet) the vectors are codes z_g instead,
c_g = class_embedding(y_g) + W z_g: the space the network learned to respond to, as the method intends.

Why groups of look-alike images, and why a vector starts at its images' mean code (issue 32, measured on the laptop
default): code dropout teaches the U-Net that z = 0 means "any image of the class", which is the denoising-loss
optimum for any group without a shared look. Over random groups of 5 the learned codes stayed near 0 and barely
moved the samples, while the same groups' mean encoder codes already drew samples closer to the group. So
`invert.grouping: look_alike` forms groups by nearness in the frozen U-Net's code space (`grouping_features`), and
`invert.init: group` starts each z_g at its images' mean code; the inversion then refines it (`class` starts at 0).

Sampling draws, for a label y, one of the class's learned vectors (uniformly over its groups), with probability
`dinv.interpolation` mixes it linearly with a second one of the same class, then perturbs it, c + lambda * N(0, I)
(`dinv.noise_scale`), and runs DDIM with the `ddim` section's settings, so dinv differs from ddim only in its
conditioning. Classifier-free guidance uses the mean learned vector as the unconditional one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from synthaug.core.config import ConfigError, Params
from synthaug.generators.base import TrainResult
from synthaug.core.arrays import class_grid, iterate_batches, to_model_range, to_uint8
from synthaug.generators.diffusion import DiffusionSampleFn
from synthaug.nets.unet import UNet, UNetConfig
from synthaug.objectives.diffusion import NoiseSchedule, diffusion_loss, eps_from_output
from synthaug.core.runtime import Runtime
from synthaug.generators.samplers import DDIMSampler, guided_eps_fn
from synthaug.core.storage import StorageError, load_checkpoint, load_state_strict, sha256_file
from synthaug.generators.training import BatchStream, run_training

# Besides this module, synthaug.generators.training and the stage (see generators/base.py).
TRAINING_CODE = ("synthaug.generators.diffusion", "synthaug.nets.unet", "synthaug.objectives.diffusion",
                 "synthaug.generators.samplers", "synthaug.data.groups")

PREVIEW_IMAGES = 4  # per row of the preview grid: real group images | learned-embedding samples | class samples
PREVIEW = "invert.png"  # the preview grid's file name
EVAL_GROUPS = 100  # groups whose images score the learned against the class embedding


def frozen_diffusion(checkpoint: Path, runtime: Runtime) -> tuple[UNet, NoiseSchedule]:
    """The EMA U-Net of a `train_diffusion` checkpoint, in eval mode with every weight frozen, and its schedule."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("family") != "diffusion":
        raise StorageError(f"{checkpoint}: not a diffusion checkpoint (family {state.get('family')!r})")
    net = UNet(UNetConfig(**state["config"]))
    load_state_strict(net, state["trainable"]["ema"], checkpoint)
    net = runtime.prepare(net).eval().requires_grad_(False)
    return net, NoiseSchedule.make(state["schedule"]["name"], int(state["schedule"]["timesteps"]))


class ConditionSpace:
    """Where the learned vectors live and how they become the U-Net's conditioning vectors: the class-embedding
    space itself (`code_dim` 0: a vector is its own conditioning) or the per-image code space (c = class + W z)."""

    def __init__(self, net: UNet):
        self.net = net
        self.dim = net.cfg.code_dim or net.cond_dim

    def initial(self, labels: torch.Tensor, group_codes: torch.Tensor | None = None) -> torch.Tensor:
        """The starting vectors of groups of these labels: their class's point, or with `group_codes` [G, S,
        code_dim] (the codes of each group's images) their mean: where the frozen U-Net already draws that group."""
        if group_codes is not None:  # invert() refuses group codes for a U-Net without codes
            return group_codes.float().mean(1).to(labels.device)
        if self.net.cfg.code_dim:
            return torch.zeros(len(labels), self.dim, device=labels.device)
        return self.net.class_embedding(labels).detach().float()

    def to_cond(self, vectors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Conditioning vectors of these vectors and their groups' labels, on the U-Net's device (the sampler's
        conditioner keeps its vectors on the CPU, where its random draws happen)."""
        if not self.net.cfg.code_dim:
            return vectors
        device = self.net.label_emb.weight.device
        return self.net.condition(labels.to(device), code=vectors.to(device))


@torch.no_grad()
def image_codes(net: UNet, runtime: Runtime, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """The frozen U-Net's codes [N, code_dim] (float, CPU) of uint8 images [N,H,W,C]."""
    out = []
    for sl in iterate_batches(len(images), batch_size):
        with runtime.autocast():
            out.append(net.encode(runtime.batch(to_model_range(images[sl]))).float().cpu())
    return torch.cat(out)


def grouping_features(diffusion_checkpoint: Path, runtime: Runtime, images: np.ndarray) -> np.ndarray:
    """What look-alike groups are formed by (`data.groups.class_groups`): the frozen U-Net's code of each image,
    the space its vectors move in; pixels when it was trained without codes."""
    net, _ = frozen_diffusion(diffusion_checkpoint, runtime)
    if not net.cfg.code_dim:
        return images.reshape(len(images), -1).astype(np.float32)
    return image_codes(net, runtime, images).numpy()


class InversionTrainable:
    """One learnable vector per group; batches carry group indices where training batches carry labels.

    The table is a sparse embedding under SparseAdam, so a step moves only the vectors of groups in the batch
    (dense Adam would keep moving every vector on its momentum long after its group was last seen). The rate
    decays linearly to 0: the loss is noisy (random t and eps), and the last iterate is what gets sampled.
    """

    def __init__(self, net: UNet, schedule: NoiseSchedule, runtime: Runtime, init: torch.Tensor, lr: float,
                 total_steps: int, group_labels: torch.Tensor):
        self.net, self.schedule, self.runtime = net, schedule, runtime
        self.space = ConditionSpace(net)
        self.group_labels = group_labels.to(runtime.device)  # codes become conditioning through their class
        self.embeddings = torch.nn.Embedding.from_pretrained(init.detach().float().clone(), freeze=False,
                                                             sparse=True).to(runtime.device)
        self.opt = torch.optim.SparseAdam(list(self.embeddings.parameters()), lr=lr)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: max(0.0, 1 - s / total_steps))

    def _model(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            return self.net(x_t, t, cond=cond)

    def train_step(self, images: torch.Tensor, groups: torch.Tensor, step: int) -> dict[str, float]:
        cond = self.space.to_cond(self.embeddings(groups), self.group_labels[groups])
        # diffusion_loss passes its "labels" to the model untouched when label dropout is 0: here they are vectors.
        loss = diffusion_loss(self._model, self.schedule, images, cond, 0.0, -1, self.net.cfg.prediction)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.lr_sched.step()
        return {"loss": loss.item()}

    def vectors(self) -> torch.Tensor:
        return self.embeddings.weight.detach()

    def state_dict(self) -> dict:
        return {"embeddings": self.embeddings.state_dict(), "opt": self.opt.state_dict(),
                "lr_sched": self.lr_sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.embeddings.load_state_dict(state["embeddings"])
        self.opt.load_state_dict(state["opt"])
        self.lr_sched.load_state_dict(state["lr_sched"])


@torch.no_grad()
def denoising_loss(net: UNet, schedule: NoiseSchedule, runtime: Runtime, x0: torch.Tensor, cond: torch.Tensor,
                   seed: int, repeats: int = 4, batch_size: int = 256) -> float:
    """Mean eps-prediction MSE (of the output converted to eps) of images x0 [N,C,H,W] under conditioning vectors
    cond [N, D], with (t, eps) drawn from `seed`: two calls with the same seed and x0 score two conditionings on
    identical noise."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(repeats):
        t = torch.randint(0, schedule.timesteps, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        for sl in iterate_batches(len(x0), batch_size):
            x_t = schedule.q_sample(x0[sl], t[sl], noise[sl])
            with runtime.autocast():
                out = net(runtime.batch(x_t), t[sl].to(runtime.device), cond=cond[sl].to(runtime.device))
            pred = eps_from_output(out.float().cpu(), x_t, t[sl], schedule, net.cfg.prediction)
            total += float(((pred - noise[sl]) ** 2).sum())
    return total / (repeats * x0.numel())


class EmbeddingConditioner:
    """labels [B] -> conditioning vectors [B, D] drawn from the learned vectors of each label's class.

    Mixing and perturbation happen where the vectors were learned; `to_cond(vectors, labels)` then maps them to
    the U-Net's conditioning (identity for the class-embedding space, class + W z for codes)."""

    def __init__(self, vectors: torch.Tensor, group_labels: torch.Tensor, num_classes: int, noise_scale: float,
                 interpolation: float,
                 to_cond: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda v, y: v):
        order = torch.argsort(group_labels, stable=True)
        self.vectors, labels = vectors[order].float().cpu(), group_labels[order].cpu()
        self.count = torch.bincount(labels, minlength=num_classes)
        if (self.count == 0).any():
            missing = torch.flatnonzero(self.count == 0).tolist()
            raise StorageError(f"no learned embedding for class(es) {missing}: re-run the `invert` stage")
        self.start = torch.cumsum(self.count, 0) - self.count
        self.to_cond = to_cond
        with torch.no_grad():  # the unconditional vector of classifier-free guidance: the mean learned one
            self.null = to_cond(self.vectors, labels).float().mean(0)
        self.noise_scale, self.interpolation = noise_scale, interpolation

    def __call__(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        labels = labels.cpu()
        n, start, count = len(labels), self.start[labels], self.count[labels]

        def pick() -> torch.Tensor:  # a uniformly chosen group of each label's class
            return start + (torch.rand(n, generator=gen) * count).long().clamp(max=count - 1)

        # Every draw happens whatever the settings, so changing one setting leaves the others' randomness alone.
        first, second = self.vectors[pick()], self.vectors[pick()]
        alpha, mix = torch.rand(n, 1, generator=gen), torch.rand(n, 1, generator=gen) < self.interpolation
        noise = torch.randn(first.shape, generator=gen)
        vectors = torch.where(mix, torch.lerp(first, second, alpha), first) + self.noise_scale * noise
        with torch.no_grad():
            return self.to_cond(vectors, labels).float()


class InversionSampleFn(DiffusionSampleFn):
    """DDIM over the frozen U-Net conditioned on vectors: `sample_fn(labels, gen)` draws the vectors with an
    `EmbeddingConditioner`; `sample_vectors(cond, gen)` samples from given vectors (previews, tests)."""

    def __init__(self, net: UNet, sampler: DDIMSampler, runtime: Runtime, guidance_scale: float, compile: bool,
                 conditioner: EmbeddingConditioner | None = None, progress: bool = True):
        super().__init__(net, sampler, runtime, guidance_scale, compile, progress)
        self.conditioner = conditioner

    def _forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(self.runtime.batch(x), t, cond=c)

    @torch.no_grad()
    def sample_vectors(self, cond: torch.Tensor, gen: torch.Generator, null: torch.Tensor | None = None
                       ) -> torch.Tensor:
        start = time.perf_counter()
        cond = cond.to(self.runtime.device)
        null = cond.mean(0) if null is None else null
        eps_fn = guided_eps_fn(self.model_fn, cond, null.to(cond).expand_as(cond), self.guidance_scale)
        x = self.sampler.sample(eps_fn, (len(cond), *self.image_shape), generator=gen,
                                device=self.runtime.device, progress=self.progress)
        self.seconds += time.perf_counter() - start
        self.images += len(cond)
        return x.clamp(-1, 1)

    def __call__(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.sample_vectors(self.conditioner(labels, gen), gen, self.conditioner.null)


# (real images per group, samples from each group's vector, from its class embedding) -> figures (issue 13)
GroupScorer = Callable[[list[np.ndarray], list[np.ndarray], list[np.ndarray]], dict[str, float]]


def invert(images: np.ndarray, members: np.ndarray, group_labels: np.ndarray, diffusion_checkpoint: Path,
           params: Params, runtime: Runtime, checkpoint: Path, log_metrics: Callable[[dict, int], None],
           fingerprint: str = "", score_groups: GroupScorer | None = None) -> TrainResult:
    """Learn one vector per group (`members` [G, S] indexes `images`, uint8 [N,H,W,C]), resuming from
    `checkpoint`; returns the loss history, the learned-vs-class loss comparison and a preview grid. With
    `score_groups` and `invert.follow_samples` > 0, also whether samples follow their group: `score_groups` gets
    every group's real images and `follow_samples` samples from its vector and from its class embedding (same
    noise), and its figures join the summary as `follows_<name>`."""
    p = params.invert
    net, schedule = frozen_diffusion(diffusion_checkpoint, runtime)
    groups = torch.from_numpy(group_labels)
    space = ConditionSpace(net)
    codes = None
    if p.init == "group":
        if not net.cfg.code_dim:
            raise ConfigError("invert.init: group starts each vector at its images' mean code, and this diffusion "
                              "model has none (diffusion.code_dim 0); use invert.init: class")
        codes = image_codes(net, runtime, images[members.reshape(-1)]).reshape(*members.shape, -1)
    init = space.initial(groups.to(runtime.device), codes)
    trainable = InversionTrainable(net, schedule, runtime, init, p.lr, p.steps, groups)
    flat = members.reshape(-1)
    stream = BatchStream(images[flat], np.repeat(np.arange(len(members)), members.shape[1]), p.batch_size,
                         seed=params.seed)
    extra = {"family": "dinv", "group_labels": groups, "members": torch.from_numpy(members),
             "num_classes": int(net.cfg.num_classes), "diffusion_checkpoint": str(diffusion_checkpoint),
             "diffusion_sha256": sha256_file(diffusion_checkpoint)}
    history = run_training(trainable, stream, runtime, p.steps, checkpoint, p.checkpoint_every, log_metrics,
                           log_every=p.log_every, desc="invert", extra_state=lambda: extra, fingerprint=fingerprint)
    with torch.no_grad():  # both as the U-Net's conditioning vectors
        vectors = space.to_cond(trainable.vectors(), groups.to(runtime.device)).float().cpu()
        class_vectors = net.class_embedding(groups.to(runtime.device)).float().cpu()

    # Score on the images of (up to) EVAL_GROUPS groups: learned vector vs the class embedding, same noise.
    pick = np.random.default_rng(params.seed).permutation(len(members))[:EVAL_GROUPS]
    x0 = to_model_range(images[members[pick].reshape(-1)])
    rows = torch.from_numpy(np.repeat(pick, members.shape[1]))
    learned = denoising_loss(net, schedule, runtime, x0, vectors[rows], params.seed)
    by_class = denoising_loss(net, schedule, runtime, x0, class_vectors[rows], params.seed)
    summary = {"final_loss": history[-1]["loss"], "groups": float(len(members)), "loss_learned": learned,
               "loss_class_embedding": by_class, "loss_ratio": learned / by_class}
    if score_groups is not None and p.follow_samples > 0:
        sample_fn = vector_sampler(net, schedule, runtime, params.ddim.steps)
        own_samples, class_samples = group_samples(sample_fn, vectors, class_vectors, range(len(members)),
                                                   p.follow_samples, params.seed)
        figures = score_groups([images[m] for m in members], own_samples, class_samples)
        summary.update({f"follows_{k}": v for k, v in figures.items()})
    grid = preview_grid(net, schedule, runtime, images, members, group_labels, vectors, class_vectors,
                        p.preview_groups, p.preview_steps, params.seed)
    return TrainResult(steps=p.steps, history=history, summary=summary,
                       images={PREVIEW: grid} if grid is not None else {})


def preview_rows(group_labels: np.ndarray, per_class: int) -> list[int]:
    """The groups the preview grid shows, one row each: the first `per_class` groups of every class."""
    return [int(g) for k in np.unique(group_labels) for g in np.flatnonzero(group_labels == k)[:per_class]]


def vector_sampler(net: UNet, schedule: NoiseSchedule, runtime: Runtime, steps: int) -> InversionSampleFn:
    """Deterministic DDIM (eta 0, no guidance) from given conditioning vectors: previews and the follows figure."""
    return InversionSampleFn(net, DDIMSampler(schedule, steps, eta=0.0), runtime, 1.0, False, progress=False)


def group_samples(sample_fn: InversionSampleFn, vectors: torch.Tensor, class_vectors: torch.Tensor,
                  groups: Iterable[int], n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per group g: `n` uint8 samples from its vector and `n` from its class embedding, both from the same start
    noise (seeded by seed + g), with no perturbation or interpolation: the two differ only in the vector."""
    own, by_class = [], []
    for g in groups:
        rows = torch.tensor([g] * n)
        for vecs, out in ((vectors, own), (class_vectors, by_class)):
            out.append(to_uint8(sample_fn.sample_vectors(vecs.cpu()[rows], torch.Generator().manual_seed(seed + g))))
    return own, by_class


def preview_grid(net: UNet, schedule: NoiseSchedule, runtime: Runtime, images: np.ndarray, members: np.ndarray,
                 group_labels: np.ndarray, vectors: torch.Tensor, class_vectors: torch.Tensor, per_class: int,
                 steps: int, seed: int) -> np.ndarray | None:
    """One row per previewed group: its first real images | samples from its learned vector | samples from its
    class embedding from the same start noise (DDIM, eta 0, no perturbation)."""
    rows = preview_rows(group_labels, per_class)
    if not rows:
        return None
    own, by_class = group_samples(vector_sampler(net, schedule, runtime, steps), vectors, class_vectors, rows,
                                  PREVIEW_IMAGES, seed)
    n_real = min(PREVIEW_IMAGES, members.shape[1])
    tiles = [t for g, o, c in zip(rows, own, by_class) for t in (images[members[g, :n_real]], o, c)]
    cols = n_real + 2 * PREVIEW_IMAGES
    return class_grid(np.concatenate(tiles), np.repeat(np.arange(len(rows)), cols), len(rows), cols)


def load_sampler(checkpoint: Path, runtime: Runtime, params: Params, source: str = "dinv"):
    """(sample_fn, settings) of source `dinv`: the `invert` stage's vectors on its frozen diffusion model."""
    if source != "dinv":
        raise ValueError(f"the inversion family has no sampler for source '{source}' (known: dinv)")
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("family") != "dinv":
        raise StorageError(f"{checkpoint}: not a Diffusion Inversion checkpoint (family {state.get('family')!r})")
    diffusion = Path(state["diffusion_checkpoint"])
    if not diffusion.exists() or sha256_file(diffusion) != state["diffusion_sha256"]:
        raise StorageError(f"{checkpoint}: its embeddings were learned on another {diffusion}; "
                           "re-run the `invert` stage (dvc repro invert)")
    runtime = runtime.for_inference()  # sampling only: channels_last, as the diffusion samplers
    net, schedule = frozen_diffusion(diffusion, runtime)
    vectors = state["trainable"]["embeddings"]["weight"]
    conditioner = EmbeddingConditioner(vectors, state["group_labels"], int(state["num_classes"]),
                                       params.dinv.noise_scale, params.dinv.interpolation,
                                       ConditionSpace(net).to_cond)
    sp = params.ddim
    sampler = DDIMSampler(schedule, sp.steps, sp.eta)
    sample_fn = InversionSampleFn(net, sampler, runtime, params.dinv.guidance_scale, sp.compile, conditioner)
    settings = {**sampler.describe(), "guidance_scale": params.dinv.guidance_scale, "ema": True,
                "compile": sp.compile, "noise_scale": params.dinv.noise_scale,
                "interpolation": params.dinv.interpolation, "groups": int(len(vectors)),
                "group_size": int(state["members"].shape[1]), "invert_steps": int(state["step"])}
    return sample_fn, settings
