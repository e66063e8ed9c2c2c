"""Lightning trainer construction (run configs are loaded by `runconfig`).

Shared by VQ-VAE and prior training: atomic checkpoints, automatic resume
from `OUT/checkpoints/last.ckpt`, DDP that leaves codebook buffers to the
quantizer's own all-reduce, CSV logs and a progress bar.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..config import TrainConfig


class _QuietLightning(logging.Filter):
    """Drop Lightning's advertising tip and a torch-internal deprecation notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QuietLightning())
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")

class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes OUT/logs/metrics.csv when the directory exists, so a resumed run
    (after a crash, or rerun with a larger train.max_steps) would lose the log of everything before it.

    This one keeps the earlier rows: its first save rewrites the file with the rows logged before the
    step the run resumed from (later ones, logged again by the resumed run, are dropped) and the new rows.
    """

    def _check_log_dir_exists(self) -> None:
        self._kept: list[dict[str, str]] | None = None
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            self._kept = list(reader)
            self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self._kept is None or not self.metrics:
            return super().save()
        first = min(int(m["step"]) for m in self.metrics)
        rows = [r for r in self._kept if int(float(r.get("step") or 0)) < first] + self.metrics
        self._kept = None
        self._record_new_keys()
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)
        self.metrics = []


class _ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives resumes (see _KeepingWriter)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temp file, fsync, then rename: a kill never leaves a half checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class Throughput(Callback):
    """Logs training samples/s (audio samples, all ranks) and the learning rate."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step, self.t0 = samples_per_step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self.t0 is not None:
            dt = now - self.t0
            pl_module.log("samples_per_s", self.samples_per_step * trainer.world_size / dt, prog_bar=True)
        self.t0 = now
        pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"])


class _LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` always holds the run's final step, under that one name.

    Lightning's own end-of-training save is skipped once any checkpoint was
    written, so a max_steps that is not a multiple of ckpt_every left the
    checkpoint behind the exported model; and its version counter wrote
    `last-v1.ckpt` beside a `last.ckpt` from before a run directory was moved,
    so the next resume went back to the older one."""

    def on_train_end(self, trainer, pl_module) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def last_checkpoint(out: Path) -> Path | None:
    p = out / "checkpoints" / "last.ckpt"
    return p if p.exists() else None


# x86 CPU flags of native bf16 arithmetic (AVX512-BF16: Zen 4, Cooper Lake; AMX: Sapphire Rapids and later).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(precision: str, accelerator: str = "auto") -> tuple[str, str]:
    """`train.precision=auto` -> (Lightning precision, why). Other values pass through unchanged.

    bf16 autocast where the hardware computes in bf16, fp32 elsewhere: on the project's Zen 4 CPU
    (avx512_bf16) a training step of the recipe's model ran 1.45x faster in bf16 with equal quality
    at 5000 steps, but on a CPU without bf16 instructions it ran 16x slower (README, "Performance").
    A GPU without bf16 (before Ampere) trains in fp32: fp16 autocast was never measured here."""
    if precision != "auto":
        return precision, ""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "the GPU supports bf16"
        return "32-true", "the GPU has no bf16"
    if accelerator not in ("auto", "cpu"):
        return "32-true", f"accelerator {accelerator}"
    have = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    if have:
        return "bf16-mixed", f"the CPU has {have[0]}"
    return "32-true", "the CPU has no bf16 instructions"


def build_trainer(tcfg: TrainConfig, out: Path, samples_per_step: int, extra_callbacks: list | None = None) -> L.Trainer:
    strategy: Any = tcfg.strategy
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Codebook EMA buffers are all-reduced by the quantizer itself; DDP's
        # buffer broadcast from rank 0 would only hide a missing reduction.
        strategy = DDPStrategy(broadcast_buffers=False, process_group_backend=None)
    devices: Any = tcfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    precision, why = resolve_precision(tcfg.precision, tcfg.accelerator)
    if why and rank_zero_only.rank == 0:  # DDP runs this in every process: one message
        print(f"train.precision=auto: {precision} ({why})", file=sys.stderr)
    ckpt = _LastCheckpoint(
        dirpath=out / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=tcfg.ckpt_every,
        save_on_train_epoch_end=False, enable_version_counter=False,
    )
    return L.Trainer(
        default_root_dir=str(out),
        accelerator=tcfg.accelerator,
        devices=devices,
        num_nodes=tcfg.num_nodes,
        strategy=strategy,
        precision=precision,
        max_steps=tcfg.max_steps,
        max_epochs=-1,
        max_time={"minutes": tcfg.max_minutes} if tcfg.max_minutes > 0 else None,
        val_check_interval=tcfg.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=tcfg.log_every,
        gradient_clip_val=tcfg.grad_clip or None,
        # flushed at every logged step, so a crash keeps the log up to the checkpoint it resumes from
        logger=_ResumableCSVLogger(str(out), name="logs", version="", flush_logs_every_n_steps=max(1, tcfg.log_every)),
        callbacks=[ckpt, Throughput(samples_per_step), TQDMProgressBar(refresh_rate=max(1, tcfg.log_every))]
        + (extra_callbacks or []),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # datasets stride by rank themselves (exact resume)
        enable_model_summary=False,
    )
