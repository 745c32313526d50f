"""The SFT cold-start recipe: assistant-only next-token loss on CoT data, on accelerate.

Same model loading, media settings, prompts, run directory, metrics and checkpoints as `videor1 train`
(shared code). The loss runs the language model head only on labelled positions, so a 16k-token video
prompt never materialises a [L, vocab] logit tensor.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from videor1.bootstrap import ensure_data, ensure_model
from videor1.config import MediaConfig, SFTConfig
from videor1.data.dataset import load_dataset
from videor1.eval.generate import answer_samples, summarize
from videor1.models.load import load_model, load_processor, prepare_for_training, unwrap_peft
from videor1.rl.data import TooManyFailures
from videor1.rl.metrics import MetricBag
from videor1.runlog import RunLog, latest_checkpoint, save_checkpoint
from videor1.sft.data import IGNORE_INDEX, BatchPlan, SFTBatches, identity_collate


class AssistantLoss(nn.Module):
    """Summed next-token NLL over labelled positions and their count, in one forward (one DDP wrapper)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of -log p(label), number of labelled tokens) for a batch."""
        base = unwrap_peft(self.model)
        hidden = base.model(**inputs, use_cache=False).last_hidden_state  # [B, L, H]
        targets = labels[:, 1:]  # [B, L-1]: position i predicts token i+1
        mask = targets != IGNORE_INDEX  # [B, L-1]
        logits = base.lm_head(hidden[:, :-1][mask])  # [K, V] only where a label exists
        nll = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
        return nll, mask.sum()


class SFTTrainer:
    """Supervised fine-tuning; see `videor1 sft --help` and configs/sft_tiny.yaml."""

    def __init__(self, config: SFTConfig, *, resume: bool = False):
        self.cfg = config
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision)
        set_seed(config.seed, device_specific=True)
        self.out = Path(config.output_dir)
        with self.accelerator.main_process_first():
            ensure_data(config.data)
            ensure_model(config.model, config.data.train_file)
        checkpoint = latest_checkpoint(self.out) if resume else None
        if resume and checkpoint is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.out}")
        state = json.loads((checkpoint / "trainer_state.json").read_text()) if checkpoint else {}
        self.step = state.get("step", 0)
        self.attempted, self.failed = state.get("attempted", 0), state.get("failed", 0)
        main = self.accelerator.is_main_process
        self.log = RunLog(self.out, enabled=main, tensorboard=config.tensorboard, resume_step=self.step)
        self.log.save_config(config)
        self._setup_model()
        self._setup_data()
        self._setup_optimization()
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint / "state"))
            self.log.info(f"resumed from {checkpoint} at step {self.step}")

    def _setup_model(self) -> None:
        cfg = self.cfg.model
        self.processor = load_processor(cfg.name_or_path)
        model = load_model(cfg.name_or_path, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)
        model = prepare_for_training(
            model, freeze_vision=cfg.freeze_vision, gradient_checkpointing=cfg.gradient_checkpointing,
            lora_r=cfg.lora.r if cfg.lora.enabled else None, lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout, lora_targets=cfg.lora.target_modules,
        )
        self.loss_module = AssistantLoss(model.train())

    def _setup_data(self) -> None:
        cfg = self.cfg
        loaded = load_dataset(cfg.data.train_file, cfg.data.media_root, require_process=True)
        self.log.records("failures.jsonl", [{"step": 0, "kind": "row", "error": str(p)} for p in loaded.problems])
        if loaded.problems:
            self.log.info(f"{loaded.bad_rows} of {loaded.num_rows} rows rejected; see failures.jsonl")
        if not loaded.samples:
            raise ValueError(f"{cfg.data.train_file}: no valid SFT rows (rows need process and solution)")
        plan = BatchPlan(
            len(loaded.samples), cfg.batch_size, cfg.seed, cfg.data.shuffle,
            rank=self.accelerator.process_index, world_size=self.accelerator.num_processes,
        )
        total = cfg.max_steps * cfg.gradient_accumulation_steps
        dataset = SFTBatches(loaded.samples, self.processor, cfg.media, plan, total)
        start = self.step * cfg.gradient_accumulation_steps
        workers = cfg.data.num_workers
        # worker processes decode and run the processor while the main process trains on the previous batch
        self.loader = DataLoader(
            dataset, batch_size=None, sampler=range(start, total), num_workers=workers,
            collate_fn=identity_collate, prefetch_factor=2 if workers else None, persistent_workers=False,
        )

    def _setup_optimization(self) -> None:
        from transformers import get_scheduler

        optim = self.cfg.optim
        params = [p for p in self.loss_module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas)
        scheduler = get_scheduler(
            optim.scheduler, optimizer, num_warmup_steps=round(optim.warmup_ratio * self.cfg.max_steps),
            num_training_steps=self.cfg.max_steps,
        )
        self.loss_module, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.loss_module, optimizer, scheduler
        )
        self.params = params

    @property
    def model(self) -> Any:
        """The trained model outside any distributed wrapper."""
        return self.accelerator.unwrap_model(self.loss_module).model

    def _record_failures(self, failures: list[dict[str, Any]], size: int) -> None:
        self.attempted += size + len(failures)
        self.failed += len(failures)
        self.log.records("failures.jsonl", [{"step": self.step, "kind": "media", **f} for f in failures])
        limit = self.cfg.data.max_failure_fraction
        if failures and self.attempted >= (1 / limit if limit > 0 else 1) and self.failed / self.attempted > limit:
            raise TooManyFailures(
                f"{self.failed} of {self.attempted} samples failed to load, above "
                f"data.max_failure_fraction={limit}; see failures.jsonl"
            )

    def _train_step(self, micro_batches: list[dict[str, Any]], bag: MetricBag) -> None:
        """One optimizer step over the micro-batches: loss = summed NLL / labelled tokens of the step."""
        device = self.accelerator.device
        tokens = sum(int((b["inputs"]["labels"] != IGNORE_INDEX).sum()) for b in micro_batches if b["size"])
        bag.total("perf/tokens", 0.0)
        for k, batch in enumerate(micro_batches):
            last = k == len(micro_batches) - 1
            # gradients of all micro-batches are summed locally and synchronised once, on the last
            with nullcontext() if last else self.accelerator.no_sync(self.loss_module):
                if batch["size"]:
                    inputs = {key: v.to(device) for key, v in batch["inputs"].items() if torch.is_tensor(v)}
                    labels = inputs.pop("labels")
                    nll, count = self.loss_module(inputs, labels)
                    loss = nll / max(tokens, 1)
                    bag.add("loss/sft", float(nll.detach()), float(count))
                    bag.total("perf/tokens", float(inputs["attention_mask"].sum()))
                else:
                    # every sample of this micro-batch failed: a zero loss keeps all processes in step
                    loss = sum(p.sum() for p in self.params) * 0.0
                self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm)
        bag.add("optim/grad_norm", float(grad_norm))
        bag.add("optim/lr", self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self) -> dict[str, float]:
        """Greedy answers on the held-out file, written to eval.jsonl: accuracy and format rate by type."""
        cfg = self.cfg.eval
        if cfg is None or not self.accelerator.is_main_process:
            return {}
        root = cfg.media_root or self.cfg.data.media_root
        samples = load_dataset(cfg.file, root).samples[: cfg.max_samples]
        media: MediaConfig = self.cfg.media
        answers = answer_samples(
            self.model, self.processor, samples, media, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens
        )
        summary = summarize(answers)
        self.log.records("eval.jsonl", [{"step": self.step, **summary}])
        self.log.info(
            f"held-out at step {self.step}: accuracy {summary['accuracy/all']:.3f}, format {summary['format/all']:.3f}"
        )
        return summary

    def save_checkpoint(self) -> Path:
        """Model + processor (Auto-loadable), accelerate state and data position."""
        state = {"step": self.step, "attempted": self.attempted, "failed": self.failed}
        return save_checkpoint(
            self.accelerator, self.out / f"checkpoint-{self.step}", self.model, self.processor,
            config_file=self.out / "config.yaml", state=state, keep=self.cfg.save_total_limit,
        )

    def train(self) -> Path:
        """Run to max_steps; evaluate before, every eval.every steps and after; checkpoint as configured."""
        from videor1.progress import step_progress

        cfg = self.cfg
        self.log.info(f"SFT of {cfg.model.name_or_path} for {cfg.max_steps} steps on {self.accelerator.device}")
        if cfg.eval is not None and self.step == 0:
            self.evaluate()
        batches = iter(self.loader)
        main = self.accelerator.is_main_process
        with step_progress(cfg.max_steps, self.step, enabled=main, label="loss") as progress:
            while self.step < cfg.max_steps:
                bag, start = MetricBag(), time.perf_counter()
                micro = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
                bag.per_process("time/data", time.perf_counter() - start)
                for batch in micro:
                    self._record_failures(batch["failures"], batch["size"])
                    bag.total("data/samples", batch["size"])
                    bag.total("data/skipped_media", len(batch["failures"]))
                self._train_step(micro, bag)
                self.step += 1
                seconds = time.perf_counter() - start
                bag.per_process("perf/step_seconds", seconds)
                metrics = bag.reduce(self.accelerator)
                metrics["perf/tokens_per_s"] = metrics.pop("perf/tokens") / max(seconds, 1e-9)
                self.log.metrics(self.step, metrics)
                progress(self.step, metrics.get("loss/sft") or 0.0, seconds)
                if cfg.eval is not None and cfg.eval.every and self.step % cfg.eval.every == 0:
                    self.evaluate()
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        if cfg.eval is not None and not (cfg.eval.every and cfg.max_steps % cfg.eval.every == 0):
            self.evaluate()
        self.log.close()
        return self.out / f"checkpoint-{self.step}"
