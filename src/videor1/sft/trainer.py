"""The SFT cold-start recipe: assistant-only next-token loss on CoT data, on accelerate.

The shared skeleton (`videor1.recipe`) does the plumbing, as for `videor1 train`: model loading, optimizer
and schedule, accumulation, checkpoints, clean exit; this file is the SFT loop only. The loss is the mean
over every labelled token of the step (all micro-batches, all processes), so a micro-batch or a process with
longer answers weighs exactly its share. The language model head runs only on labelled positions, so a
16k-token video prompt never materialises a [L, vocab] logit tensor.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from videor1.config import HeldOutConfig, MediaConfig, SFTConfig
from videor1.data.dataset import load_dataset
from videor1.data.failures import FailureBudget
from videor1.eval.generate import answer_samples, summarize_answers
from videor1.metrics import MetricBag
from videor1.models.head import DEFAULT_CHUNK_TOKENS, token_logprobs
from videor1.models.load import unwrap_peft
from videor1.recipe import Recipe
from videor1.sft.data import IGNORE_INDEX, BatchPlan, SFTBatches, identity_collate


class AssistantLoss(nn.Module):
    """Summed next-token NLL over labelled positions and their count, in one forward (one DDP wrapper).

    The vocabulary projection runs `chunk_tokens` labelled tokens at a time (`videor1.models.head`): a long CoT
    batch never holds its [tokens, vocabulary] logits.
    """

    def __init__(self, model: nn.Module, chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of -log p(label), number of labelled tokens) for a batch."""
        base = unwrap_peft(self.model)
        hidden = base.model(**inputs, use_cache=False).last_hidden_state  # [B, L, H]
        targets = labels[:, 1:]  # [B, L-1]: position i predicts token i+1
        mask = targets != IGNORE_INDEX  # [B, L-1]
        logp = token_logprobs(hidden[:, :-1][mask], base.lm_head, targets[mask], chunk_tokens=self.chunk_tokens).logp
        return -logp.sum(), mask.sum()  # only where a label exists: [K] of the [B, L-1] positions


class SFTTrainer:
    """Supervised fine-tuning; see `videor1 sft --help` and configs/sft_tiny.yaml."""

    def __init__(self, config: SFTConfig, *, resume: bool = False, overwrite: bool = False):
        self.cfg = config
        self.run = Recipe(config, resume=resume, overwrite=overwrite)
        self.accelerator, self.log = self.run.accelerator, self.run.log
        self.budget = FailureBudget(config.data.max_failure_fraction)
        self.budget.load_state_dict(self.run.state)
        # a setup that fails frees the run folder, so this process may start another run in it
        with self.run.closed_on_error():
            self.processor, model, _ = self.run.load_model()
            self._last_batch: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None  # (inputs, labels)
            self._setup_data()
            self.loss_module = self.run.prepare(
                AssistantLoss(model, config.model.logit_chunk_tokens), num_updates=config.max_steps,
                micro_batch_size=config.batch_size,
            )
            self.run.restore()

    @property
    def step(self) -> int:
        """Optimizer steps completed."""
        return self.run.step

    @property
    def model(self) -> Any:
        """The trained model outside any distributed wrapper."""
        return self.accelerator.unwrap_model(self.loss_module).model

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

    def _record_failures(self, failures: list[dict[str, Any]], size: int) -> None:
        self.log.records("failures.jsonl", [{"step": self.step, "kind": "media", **f} for f in failures])
        self.budget.record(size + len(failures), len(failures))

    def _train_step(self, micro_batches: list[dict[str, Any]], bag: MetricBag) -> None:
        """One optimizer step over the micro-batches: loss = summed NLL / labelled tokens of the whole step."""
        device = self.run.device
        local_tokens = sum(int((b["inputs"]["labels"] != IGNORE_INDEX).sum()) for b in micro_batches if b["size"])
        tokens_per_micro = self.run.tokens_per_micro(local_tokens)
        bag.total("perf/tokens", 0.0)
        for batch in micro_batches:
            with self.run.micro_batch(self.loss_module):
                if batch["size"]:
                    inputs = {key: v.to(device) for key, v in batch["inputs"].items() if torch.is_tensor(v)}
                    labels = inputs.pop("labels")
                    nll, count = self.loss_module(inputs, labels)
                    self._last_batch = (inputs, labels)
                    loss = nll / tokens_per_micro
                    bag.add("loss/sft", float(nll.detach()), float(count))
                    bag.total("perf/tokens", float(inputs["attention_mask"].sum()))
                else:  # every sample of this micro-batch failed: a zero loss keeps all processes in step
                    loss = self._zero_loss()
                    bag.add("loss/sft", 0.0, 0)  # nothing to average, but every process reports every key
                self.run.backward(loss)
        self.run.optimizer_step(bag)

    def _zero_loss(self) -> torch.Tensor:
        """A loss of 0 with a backward like any other, for a micro-batch whose samples all failed to load.

        Sharded, the backward must run every block's gradient reduce-scatter, as the other processes' does: so
        the previous micro-batch goes through the model again with every label ignored. Unsharded, the
        parameters times 0 give every gradient its (zero) share without a forward.
        """
        if not self.run.sharded:
            return sum(p.sum() for p in self.run.params) * 0.0
        if self._last_batch is None:
            raise RuntimeError("every sample of this process's first micro-batch failed to load (see failures.jsonl): "
                               "a sharded run needs one to keep its processes in step; check the data")
        inputs, labels = self._last_batch
        nll, _ = self.loss_module(inputs, torch.full_like(labels, IGNORE_INDEX))
        return nll * 0.0

    def evaluate(self) -> dict[str, float]:
        """Greedy answers on the held-out file, written to eval.jsonl: accuracy and format rate by type."""
        cfg = self.cfg.eval
        if cfg is None:
            return {}
        with self.run.whole_model(self.loss_module):  # only the main process generates: its forwards are local
            return self._evaluate(cfg) if self.run.is_main else {}

    def _evaluate(self, cfg: HeldOutConfig) -> dict[str, float]:
        """Greedy answers on the held-out file (main process), logged to eval.jsonl."""
        root = cfg.media_root or self.cfg.data.media_root
        samples = load_dataset(cfg.file, root).samples[: cfg.max_samples]
        media: MediaConfig = self.cfg.media
        answers = answer_samples(
            self.model, self.processor, samples, media, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens
        )
        summary = summarize_answers(answers)
        self.log.records("eval.jsonl", [{"step": self.step, **summary}])
        self.log.info(
            f"held-out at step {self.step}: accuracy {summary['accuracy/all']:.3f}, format {summary['format/all']:.3f}"
        )
        return summary

    def save_checkpoint(self) -> Any:
        """Model + processor (Auto-loadable), accelerate state and data position."""
        return self.run.save_checkpoint(self.model, self.processor, self.budget.state_dict())

    def train(self) -> Any:
        """Run to max_steps; evaluate before, every eval.every steps and after; checkpoint as configured."""
        cfg = self.cfg
        self.log.info(f"SFT of {cfg.model.name_or_path} for {cfg.max_steps} steps on {self.run.device}")
        with self.run.closed_on_error():
            if cfg.eval is not None and self.step == 0:
                self.evaluate()
            self._steps()
            if cfg.eval is not None and not (cfg.eval.every and cfg.max_steps % cfg.eval.every == 0):
                self.evaluate()
        self.run.close()
        return self.run.out / f"checkpoint-{self.step}"

    def _steps(self) -> None:
        """The training loop: a step, its metrics, held-out evaluation and checkpoint when due, up to max_steps."""
        cfg = self.cfg
        batches = iter(self.loader)
        with self.run.progress("loss") as progress:
            while self.step < cfg.max_steps:
                bag, start = MetricBag(), time.perf_counter()
                micro = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
                bag.per_process("time/data", time.perf_counter() - start)
                for batch in micro:
                    self._record_failures(batch["failures"], batch["size"])
                    bag.total("data/samples", batch["size"])
                    bag.total("data/skipped_media", len(batch["failures"]))
                self._train_step(micro, bag)
                self.run.step += 1
                seconds = time.perf_counter() - start
                bag.per_process("perf/step_seconds", seconds)
                metrics = bag.reduce(self.accelerator)
                metrics["perf/tokens_per_s"] = metrics.pop("perf/tokens") / max(seconds, 1e-9)
                self.run.check_loss(self.step, metrics, "loss/sft")
                self.log.metrics(self.step, metrics)
                progress(self.step, {"loss": metrics.get("loss/sft")}, seconds)
                if cfg.eval is not None and cfg.eval.every and self.step % cfg.eval.every == 0:
                    self.evaluate()
                if self.run.due_checkpoint():
                    self.save_checkpoint()
