"""Training the VQ-VAE with PyTorch Lightning (one CPU to many GPUs / nodes)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Subset

from ..config import TrainConfig, VQVAEConfig
from ..data.manifest import CorpusError, read_speakers, read_summary, require_split
from ..data.segments import CropDataset, FixedCropDataset
from ..hub import fingerprint, load_model, save_model
from ..models.quantizer import perplexity
from ..models.vqvae import VQVAE
from .init import carry_prior, init_config, init_weights, model_config_from, run_speakers
from .runconfig import ConfigError, load_run_config, model_config, save_run_config, train_config
from .runner import build_trainer, last_checkpoint


def lr_lambda(tcfg: TrainConfig):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / tcfg.warmup_steps) if tcfg.warmup_steps else 1.0
        if tcfg.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, tcfg.max_steps))))
        return warm

    return f


class VQVAETask(L.LightningModule):
    def __init__(self, mcfg: VQVAEConfig, tcfg: TrainConfig, out: Path, carried_prior=None):
        super().__init__()
        self.model = VQVAE(mcfg)
        self.tcfg, self.out = tcfg, out
        if tcfg.freeze_codes:
            for p in [*self.model.encoder.parameters(), *self.model.quantizer.parameters()]:
                p.requires_grad_(False)
        if tcfg.freeze_decoder:  # speaker adaptation: only the embedding rows of the corpus's speakers move
            for name, p in self.model.decoder.named_parameters():
                p.requires_grad_(name == "speaker_embedding.weight")
        # not a registered submodule: neither trained nor checkpointed; attached to the exported model
        object.__setattr__(self, "carried_prior", carried_prior)
        self.exported = False
        # not a registered submodule: checkpoints hold the plain model once
        object.__setattr__(self, "forward_fn", torch.compile(self.model) if tcfg.compile else self.model)
        self._val_counts: list[torch.Tensor] = []
        self._val_nll: list[torch.Tensor] = []

    # ---------------------------------------------------------------- data

    def train_dataloader(self) -> DataLoader:
        t, hop = self.tcfg, self.model.hop_length
        start = self.trainer.global_step * t.batch_size  # exact resume: continue the item stream
        # The length must not depend on `start`: Lightning restores its position in
        # the epoch (batches done) and ends the epoch at len(loader); a shorter
        # loader would end the epoch early and replay the stream from `start`.
        ds = CropDataset(t.data, self.model.speakers, t.crop, hop, "train", seed=t.seed,
                         length=(t.max_steps + 1) * t.batch_size, offset=start,
                         rank=self.global_rank, world=self.trainer.world_size)
        return DataLoader(ds, batch_size=t.batch_size, num_workers=t.num_workers, shuffle=False,
                          persistent_workers=t.num_workers > 0, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        t, hop = self.tcfg, self.model.hop_length
        try:
            ds = FixedCropDataset(t.data, self.model.speakers, t.crop, hop, "valid", max_items=t.val_utterances)
        except CorpusError:  # a corpus without a validation split: a spread of training utterances
            ds = FixedCropDataset(t.data, self.model.speakers, t.crop, hop, "train", max_items=t.val_utterances)
        # each rank validates its own share; the epoch-end reduction combines them
        mine = list(range(self.global_rank, len(ds), self.trainer.world_size))
        # Lightning refuses an empty loader on any rank: a rank without a share validates one item and counts none
        self._val_discard, self._val_n = not mine, len(mine)
        return DataLoader(Subset(ds, mine or [0]), batch_size=t.batch_size)

    # ---------------------------------------------------------------- steps

    def on_train_batch_start(self, batch, batch_idx):
        if self.tcfg.freeze_codes:  # eval mode: no EMA updates or restarts (Lightning sets train() after validation)
            self.model.encoder.eval()
            self.model.quantizer.eval()

    def training_step(self, batch, batch_idx):
        wav, spk = batch  # (B, 1, T), (B,)
        # dither / jitter / restarts draw from a generator seeded by the step: exact resume
        torch.manual_seed(self.tcfg.seed * 1_000_003 + self.global_step * 97 + self.global_rank)
        out = self.forward_fn(wav, spk)
        log = dict(on_step=True, on_epoch=False)
        self.log("loss", out.loss, prog_bar=True, **log)
        self.log("nll", out.nll, prog_bar=True, **log)
        self.log("codebook_loss", out.codebook_loss, **log)
        self.log("commitment_loss", out.commitment_loss, **log)
        self.log("perplexity", out.perplexity[0], prog_bar=True, **log)
        self.log("codes_used", out.codes_used[0].float(), **log)
        # codes re-seeded this step: at restart_threshold 1.0 every below-average code is, which keeps
        # a share of the codebook moving all through training (visible here, not in perplexity)
        self.log("restarts", float(getattr(self.model.quantizer.layers[0], "restarts", 0)), **log)
        for i in range(1, len(out.perplexity)):
            self.log(f"perplexity_q{i}", out.perplexity[i], **log)
        return out.loss

    def validation_step(self, batch, batch_idx):
        if self._val_discard:
            return
        wav, spk = batch
        out = self.model(wav, spk)
        self._val_nll.append(out.nll.detach() * wav.shape[0])
        k = self.model.codebook_size
        self._val_counts.append(torch.stack([torch.bincount(out.codes[:, i].flatten(), minlength=k)
                                             for i in range(out.codes.shape[1])]))
        if batch_idx == 0 and self.global_rank == 0:
            self._example = (wav[0, 0], int(spk[0]), out.codes[0])

    def on_validation_epoch_end(self):
        # Every rank joins the reductions, also one whose share of the validation set is empty
        # (val_utterances < devices): skipping them would leave the other ranks waiting forever.
        dev = self.device
        if self._val_counts:
            counts = torch.stack(self._val_counts).sum(0).float()  # (n_q, K)
        else:
            counts = torch.zeros(self.model.n_q, self.model.codebook_size, device=dev)
        nll_sum = torch.stack(self._val_nll).sum().float() if self._val_nll else torch.zeros((), device=dev)
        tot = torch.stack([nll_sum, torch.tensor(float(self._val_n), device=dev)])
        self._val_counts.clear()
        self._val_nll.clear()
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(tot)
        if float(tot[1]) == 0:
            return
        self.log("val_nll", tot[0] / tot[1], sync_dist=False)  # mean over every rank's utterances
        self.log("val_perplexity", perplexity(counts[0]), sync_dist=False)
        self.log("val_codes_used", (counts[0] > 0).sum().float(), sync_dist=False)
        if self.global_rank == 0 and not self.trainer.sanity_checking:
            self.export()
            self.write_example()

    def export(self) -> None:
        self.exported = True
        if self.carried_prior is not None:  # in __dict__, not _modules: it stays out of training and checkpoints
            object.__setattr__(self.model, "prior", self.carried_prior)
        try:
            save_model(self.model, self.out / "model")
        finally:
            object.__setattr__(self.model, "prior", None)

    def write_example(self) -> None:
        from ..audio import save

        ex = getattr(self, "_example", None)
        if ex is None or self.tcfg.sample_seconds <= 0:
            return
        wav, spk, codes = ex
        n = min(len(wav), int(self.tcfg.sample_seconds * self.model.sample_rate))
        frames = -(-n // self.model.hop_length)
        self.model.eval()
        gen = self.model.decode(codes[:, :frames].cpu(), speaker=spk, seed=0, length=n)
        d = self.out / "samples"
        save(d / f"step{self.global_step:07d}_input.wav", wav[:n].float().cpu(), self.model.sample_rate)
        save(d / f"step{self.global_step:07d}_output.wav", gen, self.model.sample_rate)

    def configure_optimizers(self):
        opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.tcfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.tcfg))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self):
        if self.tcfg.dump_rank_state:
            from safetensors.torch import save_file

            state = {k: v.contiguous().clone() for k, v in self.model.quantizer.state_dict().items()}
            save_file(state, str(self.out / f"rank{self.global_rank}_quantizer.safetensors"))
        if self.global_rank == 0:
            self.export()


def check_corpus_level(mcfg: VQVAEConfig, summary: dict, data: str) -> None:
    """A model that encodes at a fixed input level must train on a corpus `prepare` brought to that level."""
    lv, opts = mcfg.input_level_dbfs, summary.get("options")
    if lv is None or not isinstance(opts, dict):  # no level, or a corpus without prepare's record: nothing to check
        return
    if not opts.get("normalize"):
        raise ConfigError(f"model.input_level_dbfs={lv:g} needs a level-normalised corpus, but {data} was prepared "
                          "without --normalize: prepare it again with --normalize (or set model.input_level_dbfs=null)")
    if abs(float(opts.get("target_dbfs", -25.0)) - lv) > 0.01:
        raise ConfigError(f"{data} is normalised to {opts.get('target_dbfs')} dBFS but model.input_level_dbfs "
                          f"is {lv:g}: set model.input_level_dbfs={opts.get('target_dbfs')}")


def train_vqvae(config_path: str | None, overrides: list[str], resume: bool = True) -> Path:
    raw = load_run_config(config_path, overrides)
    tcfg = train_config(raw)
    if not tcfg.data:
        raise ConfigError("no training data: set train.data to a prepared corpus (vqaudio prepare ...)")
    require_split(tcfg.data, "train")
    speakers = read_speakers(tcfg.data, split="train") or read_speakers(tcfg.data)
    if tcfg.freeze_codes and not tcfg.init_from:
        raise ConfigError("train.freeze_codes keeps the codes of a trained model: set train.init_from too")
    if tcfg.freeze_decoder and not tcfg.freeze_codes:
        raise ConfigError("train.freeze_decoder trains the speaker embeddings only: set train.freeze_codes=true too")
    if tcfg.keep_speakers and not tcfg.init_from:
        raise ConfigError("train.keep_speakers keeps the speakers of a trained model: set train.init_from too")
    by_id = tcfg.init_speakers == "by_id"
    if tcfg.init_from:  # fine-tuning: the init model's architecture, this corpus's speakers (+ its own with keep)
        base = init_config(tcfg.init_from)
        if tcfg.freeze_decoder and not (base.speakers and speakers):  # the corpus's own speakers, before keep
            raise ConfigError("train.freeze_decoder adapts speaker embeddings, but "
                              + ("the corpus has no speakers" if not speakers else
                                 f"{tcfg.init_from} has no speaker conditioning to adapt")
                              + "; fine-tune the decoder instead (drop train.freeze_decoder)")
        speakers = run_speakers(speakers, base, tcfg.keep_speakers, by_id, tcfg.init_from)
        mcfg = model_config_from(raw, speakers, base, tcfg.init_from)
    else:
        mcfg = model_config(raw, speakers)
    summary = read_summary(tcfg.data)
    corpus_sr = int(summary.get("sample_rate", 16000))
    check_corpus_level(mcfg, summary, tcfg.data)
    if corpus_sr != mcfg.sample_rate:  # the crops are read at the corpus's rate: a mismatch would train on rescaled time
        raise ConfigError(f"{tcfg.data} is prepared at {corpus_sr} Hz but model.sample_rate is {mcfg.sample_rate}; "
                          f"train at the corpus's rate (model.sample_rate={corpus_sr})")
    if tcfg.crop % mcfg.hop_length:
        raise ConfigError(f"train.crop ({tcfg.crop}) must be a multiple of the hop ({mcfg.hop_length})")
    try:  # a model config the modules refuse: one line, before anything is written
        VQVAE(mcfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out = Path(tcfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_run_config(out, raw, tcfg, mcfg)
    ckpt = last_checkpoint(out) if resume else None
    # a resumed run takes its weights from its checkpoint: the init model is read only to start, or for its prior
    src = load_model(tcfg.init_from) if tcfg.init_from and (ckpt is None or tcfg.freeze_codes) else None
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    keep = tcfg.keep_speakers
    task = VQVAETask(mcfg, tcfg, out, carry_prior(src, mcfg.speaker_ids, by_id, keep) if tcfg.freeze_codes else None)
    if src is not None and ckpt is None:
        rep = init_weights(task.model, src, by_id, keep)
        dropped = len(set(src.speakers) - set(rep["kept"]))
        if rank_zero_only.rank == 0:  # DDP runs this function in every process: one message
            print(f"starting from {src.source_path} (fingerprint {fingerprint(src)}): speakers kept {len(rep['kept'])}, "
                  f"new {len(rep['new'])} (from the mean voice), dropped {dropped} (the model's, not in this corpus)"
                  + ("; only speaker embeddings train" if tcfg.freeze_decoder else
                     "; codes frozen" if tcfg.freeze_codes else ""), file=sys.stderr)
    trainer = build_trainer(tcfg, out, samples_per_step=tcfg.batch_size * tcfg.crop)
    if ckpt is not None and trainer.global_rank == 0:
        print(f"resuming from {ckpt}", file=sys.stderr)
    trainer.fit(task, ckpt_path=str(ckpt) if ckpt else None)
    if ckpt is None and not task.exported and trainer.global_rank == 0:
        task.export()  # train.max_steps=0 ends before on_train_end: the model as it starts (e.g. from init_from)
    return out / "model"

