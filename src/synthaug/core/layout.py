"""Where things live on disk between stages (DESIGN §3), and the dvc.yaml stage item that makes each.

Shared by every study seed: the real data (data/real), the FID reference (data/fid_ref.npz), the analyses and the
report. Everything else belongs to one study seed's chain (`Chain`): its nested real subsets, generators,
inversion, samples, FIDs and classifiers, under a `study<K>` folder of each kind, so that adding a study seed adds
folders and stage items without touching the others. Paths are relative to the repo root (DVC's wdir).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REAL_DIR = Path("data/real")
FRACTIONS_DIR = Path("data/fractions")  # one file per study seed, beside data/real (a new fraction keeps its bytes)
SYNTH_DIR = Path("data/synthetic")
FID_REF = Path("data/fid_ref.npz")
FEATURES = Path("data/features")  # per-source Inception features of the FID sample, for reuse
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")


@dataclass(frozen=True)
class Chain:
    """One study seed's chain: its files and its dvc.yaml stage items (`train_vae@0`, `fid@vae-0`, ...)."""

    study: int

    @property
    def name(self) -> str:
        return f"study{self.study}"

    @property
    def fractions(self) -> Path:
        return FRACTIONS_DIR / f"{self.name}.json"

    @property
    def synthetic(self) -> Path:
        """Every source's shards of this chain: data/synthetic/study<K>/<source>/."""
        return SYNTH_DIR / self.name

    def shards(self, source: str) -> Path:
        return self.synthetic / source

    def features(self, source: str) -> Path:
        return FEATURES / self.name / f"{source}.npz"

    def checkpoint(self, family: str) -> Path:
        """A generator family's checkpoint (`dinv`: the learned vectors), models/study<K>/<family>/checkpoint.pt."""
        return MODELS / self.name / family / "checkpoint.pt"

    @property
    def judge(self) -> Path:
        """The `real` arm's classifier on the most real data (first classifier seed): it scores synthetic labels."""
        return MODELS / self.name / "judge" / "classifier.pt"

    @property
    def classifiers(self) -> Path:
        """Each arm's kept classifier (first fraction, first classifier seed): what `gradcam` reads."""
        return MODELS / self.name / "classify"

    def classifier_weights(self, arm_slug: str) -> Path:
        return self.classifiers / f"{arm_slug}.pt"

    def metrics(self, kind: str, root: Path = METRICS) -> Path:
        """metrics/<kind>/study<K>/: e.g. metrics/fid/study0/vae.json, metrics/classify/study0/real/f0.01_s0.json
        (`root`: another metrics folder, e.g. the report's tests')."""
        return root / kind / self.name

    def metrics_file(self, kind: str, root: Path = METRICS) -> Path:
        """A stage's one metrics file per chain: metrics/invert/study0.json, metrics/fidelity/study0.json."""
        return root / kind / f"{self.name}.json"

    def plots(self, kind: str) -> Path:
        return PLOTS / kind / self.name

    @property
    def grids(self) -> Path:
        return REPORTS / "grids" / self.name

    # dvc.yaml's stage items of this chain (matrix stages over `study_seeds`)
    def train_item(self, family: str) -> str:
        return f"invert@{self.study}" if family == "dinv" else f"train_{family}@{self.study}"

    def sample_item(self, source: str) -> str:
        return f"sample_{source}@{self.study}"

    def fid_item(self, source: str) -> str:
        return f"fid@{source}-{self.study}"

    def classify_item(self, arm: str) -> str:
        """The item that trains an arm, e.g. `classify_mixed@vae-0` for `real+vae`."""
        if arm in ("real", "real+all"):
            return f"classify_{arm.replace('real+', '')}@{self.study}"
        kind, source = ("mixed", arm[5:]) if arm.startswith("real+") else ("synth", arm[6:])
        return f"classify_{kind}@{source}-{self.study}"

    @property
    def fidelity_item(self) -> str:
        return f"fidelity@{self.study}"
