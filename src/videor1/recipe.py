"""The skeleton every training recipe shares (`videor1 sft`, `videor1 train`); each recipe keeps only its loop.

One home for what multi-process runs get wrong when every recipe wires accelerate by hand:
- **Schedules.** accelerate steps a prepared scheduler once per process on every call (it assumes the
  dataloader batch grew with the process count), so an N-process cosine ran N times too fast and climbed
  back. Here the scheduler steps exactly once per optimizer update, whatever the process count.
- **Accumulation.** Micro-batches run inside `accelerator.accumulate`, so DDP and FSDP synchronise once per
  update and DeepSpeed steps its engine once per update (without it, every `backward` is a DeepSpeed step).
  accelerate (or DeepSpeed) divides each micro-batch loss by the accumulation count and the engines average
  over processes: a recipe hands `backward` the micro-batch's own loss, normalised by `tokens_per_micro`
  where the loss is a token mean over the whole step.
- **Clipping.** `optim.max_grad_norm` is what clips on every engine; a DeepSpeed config that says otherwise
  (`gradient_clipping`, `gradient_accumulation_steps`) is an error rather than a silent override.
- **Global statistics.** `gather_rows` / `tokens_per_micro` give a step-wide view (all micro-batches,
  all processes) to batch-level statistics.
- **Sharding.** With `distributed.sharding: fsdp2` the recipe shards the model itself (`videor1.sharding`)
  and steps, clips and checkpoints the optimizer without accelerate, which would wrap the model in DDP.
- **Run folders.** The main process claims `output_dir` (`videor1.runlog.claim_output_dir`: a lock for the
  run's life, no other run's results clobbered, a resume only with the settings its checkpoint was trained
  with) and every process then stops alike on its verdict, rather than waiting at a collective for it.
- **Divergence.** A non-finite gradient norm stops the run before the optimizer applies it, a non-finite loss
  before the step is logged or checkpointed (`TrainingDiverged`); both are the same number on every process,
  so all stop at the same point.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from pydantic import ValidationError

from videor1.bootstrap import ensure_data, ensure_model
from videor1.config import RecipeConfig
from videor1.models.load import load_model, load_processor, prepare_for_training, set_torch_threads, unwrap_peft
from videor1.runlog import RunLock, RunLog, claim_output_dir, latest_checkpoint, save_checkpoint
from videor1.sharding import clip_grad_norm, full_state_dict, gathered, load_sharded, save_sharded, shard
from videor1.trackers import flatten

# the DeepSpeed keys our config decides, and the config key that decides each
DEEPSPEED_KEYS = {
    "gradient_clipping": "optim.max_grad_norm",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "train_micro_batch_size_per_gpu": "the recipe's micro-batch size",
}


def deepspeed_overrides(ds_config: dict[str, Any], wanted: dict[str, float | int]) -> dict[str, float | int]:
    """The DeepSpeed config values to fill from ours ("auto" or absent); raise where the config disagrees."""
    updates: dict[str, float | int] = {}
    for key, value in wanted.items():
        current = ds_config.get(key, "auto")
        if current == "auto":
            updates[key] = value
        elif float(current) != float(value):
            raise ValueError(
                f"the DeepSpeed config sets {key}={current} but {DEEPSPEED_KEYS[key]} is {value}: "
                f'set {key} to "auto" there, or make the two agree'
            )
    return updates


def sum_over_processes(accelerator: Any, value: float) -> float:
    """A local number summed over all processes."""
    if accelerator.num_processes == 1:
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(total, reduction="sum").item())


def tokens_per_micro(accelerator: Any, local_tokens: float, accumulation: int) -> float:
    """T_step / (k·W): divide a micro-batch's token sum by it for its share of the step-wide token mean.

    accelerate divides each of the k micro-batch losses by k and the engine averages gradients over W
    processes, so Σ_micro / (T_step / (k·W)) summed that way ends as Σ_step / T_step, with T_step counted
    over every micro-batch of every process.
    """
    return max(sum_over_processes(accelerator, local_tokens), 1.0) / (accumulation * accelerator.num_processes)


def gather_rows(accelerator: Any, values: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """Every process's rows of an equally shaped tensor, in rank order, and the slice that is this process's."""
    rows = values.shape[0]
    start = accelerator.process_index * rows
    if accelerator.num_processes == 1:
        return values, slice(0, rows)
    gathered = accelerator.gather(values.to(accelerator.device).contiguous()).to(values.device)
    return gathered, slice(start, start + rows)


SHARDED_DIR = "sharded"  # a sharded run's model and optimizer shards, under a checkpoint's state/
SCHEDULER_FILE = "scheduler.pt"


def check_launch(config: RecipeConfig, accelerator: Any) -> None:
    """Refuse, in one line each, launches whose sharding cannot work: ZeRO-3, two shardings at once, fsdp2 alone."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        raise ValueError(
            "DeepSpeed ZeRO-3 is not supported: its parameters are gathered inside DeepSpeed's engine, which the "
            "sampler, the reference model and vLLM pushes do not go through. Shard with torch's FSDP2 instead: "
            "distributed.sharding=fsdp2 and a plain launch (accelerate launch --num_processes N -m videor1.cli ...); "
            "ZeRO-1 and ZeRO-2 work as they are"
        )
    if config.distributed.sharding == "none":
        return
    if plugin is not None or getattr(accelerator.state, "fsdp_plugin", None) is not None:
        raise ValueError(
            "distributed.sharding=fsdp2 shards the model itself, and this launch also asks accelerate for "
            "DeepSpeed or FSDP: launch without --use_deepspeed / --use_fsdp (accelerate launch --num_processes N)"
        )
    if config.mixed_precision != "no":
        raise ValueError(
            f"mixed_precision={config.mixed_precision} is accelerate's autocast, which a model sharded by "
            "distributed.sharding=fsdp2 does not get: set mixed_precision=no and distributed.param_dtype / "
            "distributed.reduce_dtype (or load the model in that dtype with model.dtype)"
        )
    if config.distributed.cpu_offload and accelerator.device.type == "cpu":
        raise ValueError(
            "distributed.cpu_offload keeps a GPU run's shards in CPU memory between uses; this run is on the CPU, "
            "where they are already: set distributed.cpu_offload=false"
        )
    check_shardable(config, accelerator.num_processes)


def check_shardable(config: RecipeConfig, num_processes: int) -> None:
    """Refuse, in one line, a sharded run on one process."""
    if num_processes < 2:
        raise ValueError(
            "distributed.sharding=fsdp2 shards over several processes, and this run has one: launch it with "
            "accelerate launch --num_processes N (or torchrun), or set distributed.sharding=none"
        )


# Settings a resumed run may change (a dotted key, or a section and everything under it): how far it trains, how
# it records and saves, where its files are and how it uses the machine. Every other setting shapes the weights,
# the optimizer state or the place in the data that the checkpoint holds, so it must match: a changed optim.lr,
# say, would be silently replaced by the one in the checkpoint's optimizer state.
RESUMABLE_SETTINGS = (
    "output_dir", "max_steps", "save_every", "save_total_limit", "report_to", "log_rollouts", "eval", "torch_threads",
    "data.media_root", "data.num_workers", "data.max_failure_fraction",
    "model.attn_implementation", "model.gradient_checkpointing", "model.logit_chunk_tokens",
    "distributed.reshard_after_forward", "distributed.cpu_offload",
    "generation.vllm.gpu_memory_utilization", "generation.vllm.enforce_eager", "generation.vllm.max_model_len",
    "generation.vllm.enable_sleep_mode", "generation.vllm.check_prompts",
)


def resumable(key: str) -> bool:
    """Whether the dotted setting `key` may differ from the checkpoint's on --resume."""
    return any(key == name or key.startswith(f"{name}.") for name in RESUMABLE_SETTINGS)


def resume_conflicts(saved: dict[str, Any], config: RecipeConfig) -> list[str]:
    """"key (checkpoint: a, now: b)" for each setting outside RESUMABLE_SETTINGS that differs from the saved config.

    A key only one of the two configs has (written by another version of videor1) is not compared.
    """
    try:  # through the config class, so an older file's spellings and left-out defaults compare as resolved
        saved = type(config).model_validate(saved).model_dump(mode="json")
    except ValidationError:
        pass
    before, now = dict(flatten(saved)), dict(flatten(config.model_dump(mode="json")))
    return [
        f"{key} (checkpoint: {json.dumps(before[key])}, now: {json.dumps(now[key])})"
        for key in before
        if key in now and before[key] != now[key] and not resumable(key)
    ]


def check_resumable(checkpoint: Path, config: RecipeConfig) -> None:
    """Refuse, in one line, to resume `checkpoint` with settings that cannot change on resume."""
    saved_file = checkpoint / "config.yaml"
    if not saved_file.is_file():
        return  # nothing to compare with
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        raise ValueError(
            f"--resume: {checkpoint} was trained with other settings, which a resumed run cannot change: "
            f"{'; '.join(conflicts)}. Resume with the checkpoint's values, or start a new run in another output_dir "
            f"(model.name_or_path={checkpoint} starts it from these weights)"
        )


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm is not a finite number: the run stops without saving such weights."""


class Recipe:
    """Accelerator, seeding, run dir and log, resume state, model preparation, optimisation and checkpoints."""

    def __init__(self, config: RecipeConfig, *, resume: bool = False, overwrite: bool = False):
        self.cfg = config
        set_torch_threads(config.torch_threads)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            # accelerate would step the scheduler num_processes times per call; `optimizer_step` steps it once
            step_scheduler_with_optimizer=False,
        )
        set_seed(config.seed, device_specific=True)  # same init everywhere, different sampling per rank
        self.out = Path(config.output_dir)
        self._lock = self._claim(resume=resume, overwrite=overwrite)
        with self.closed_on_error():
            with self.accelerator.main_process_first():
                ensure_data(config.data)
                ensure_model(config.model, config.data.train_file)
            self.checkpoint = latest_checkpoint(self.out) if resume else None
            self.state: dict[str, Any] = (
                json.loads((self.checkpoint / "trainer_state.json").read_text()) if self.checkpoint else {}
            )
            self.step: int = self.state.get("step", 0)
            self.log = RunLog(self.out, enabled=self.is_main, report_to=config.report_to, resume_step=self.step)
            if self._lock is not None and self._lock.unsupported:
                self.log.info(f"run folder not locked: {self._lock.unsupported}")
            self.log.save_config(config)
            self.optimizer: Any = None
            self.scheduler: Any = None
            self.params: list[torch.nn.Parameter] = []
            self.sharded = config.distributed.sharding == "fsdp2"
            check_launch(config, self.accelerator)

    def _claim(self, *, resume: bool, overwrite: bool) -> RunLock | None:
        """The main process's lock on output_dir (`claim_output_dir`), its resume settings checked; a refusal is
        raised on every process, so none waits at a collective for a main process that has stopped."""
        lock, refusal = None, None
        if self.is_main:
            try:
                lock = claim_output_dir(self.out, resume=resume, overwrite=overwrite)
                if resume:
                    check_resumable(latest_checkpoint(self.out), self.cfg)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - handed to every process and raised there
                refusal = exc
                if lock is not None:
                    lock.release()
        refusal = broadcast_object_list([refusal])[0]
        if refusal is not None:
            raise refusal
        return lock

    @contextmanager
    def closed_on_error(self) -> Iterator[None]:
        """Close the run (its log, trackers and lock) when what runs inside fails, so that this process can start
        another run in the folder; the exception goes on."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    @property
    def is_main(self) -> bool:
        """True on the process that writes the run directory."""
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        """This process's device."""
        return self.accelerator.device

    # ---- setup ---------------------------------------------------------------------------------------------
    def load_model(self, *, reference: bool = False) -> tuple[Any, Any, Any | None]:
        """(processor, model prepared for training, frozen reference copy or None).

        The reference is a copy of the starting weights, made before LoRA or freezing touch them; with LoRA
        there is none (the base model with the adapter disabled is the reference).
        """
        import copy

        cfg = self.cfg.model
        processor = load_processor(cfg.name_or_path)
        model = load_model(cfg.name_or_path, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)
        frozen_copy = None
        if reference and not cfg.lora.enabled:
            frozen_copy = copy.deepcopy(model).requires_grad_(False).eval().to(self.device)
            if self.sharded:  # sharded like the policy, never a whole copy per process
                shard(frozen_copy, frozen_copy, self.cfg.distributed, self.device)
        model = prepare_for_training(
            model, freeze_vision=cfg.freeze_vision, gradient_checkpointing=cfg.gradient_checkpointing,
            lora_r=cfg.lora.r if cfg.lora.enabled else None, lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout, lora_targets=cfg.lora.target_modules,
        )
        return processor, model.train(), frozen_copy

    def prepare(self, module: torch.nn.Module, *, num_updates: int, micro_batch_size: int) -> Any:
        """AdamW over the trainable parameters and a schedule of `num_updates` updates; returns the wrapped module."""
        from transformers import get_scheduler

        optim = self.cfg.optim
        if self.sharded:  # before the optimizer: its state follows the parameters' shards
            shard(module, module.model, self.cfg.distributed, self.device)
        self.params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas)
        scheduler = get_scheduler(
            optim.scheduler, optimizer, num_warmup_steps=round(optim.warmup_ratio * num_updates),
            num_training_steps=num_updates,
        )
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is not None:
            plugin.deepspeed_config.update(deepspeed_overrides(plugin.deepspeed_config, {
                "gradient_clipping": optim.max_grad_norm,
                "gradient_accumulation_steps": self.cfg.gradient_accumulation_steps,
                "train_micro_batch_size_per_gpu": micro_batch_size,
            }))
        if self.sharded:
            self.optimizer, self.scheduler, self.module = optimizer, scheduler, module
            return module
        module, self.optimizer, self.scheduler = self.accelerator.prepare(module, optimizer, scheduler)
        return module

    def restore(self) -> None:
        """Load the optimizer, scheduler and RNG state of the checkpoint being resumed (if any)."""
        if self.checkpoint is None:
            return
        state = self.checkpoint / "state"
        self.accelerator.load_state(str(state))  # sharded runs: the RNG states only, nothing else is registered
        if self.sharded:
            load_sharded(state / SHARDED_DIR, self.module, self.optimizer)
            self.scheduler.load_state_dict(torch.load(state / SCHEDULER_FILE, weights_only=True))
        self.log.info(f"resumed from {self.checkpoint} at step {self.step}")

    @contextmanager
    def whole_model(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Full weights for forwards that processes run in different numbers (rollouts, evaluation): no-op unless
        sharded. Every process must enter it, as it gathers."""
        if not self.sharded:
            yield
            return
        with gathered(*modules, reshard_after_forward=self.cfg.distributed.reshard_after_forward):
            yield

    # ---- one update ----------------------------------------------------------------------------------------
    @contextmanager
    def micro_batch(self, module: Any) -> Iterator[None]:
        """One of `gradient_accumulation_steps` micro-batches: engines synchronise (and DeepSpeed steps) on the last."""
        with self.accelerator.accumulate(module):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's loss; the engine averages over micro-batches and processes."""
        self.accelerator.backward(loss)

    def optimizer_step(self, bag: Any) -> None:
        """Clip to optim.max_grad_norm, step the optimizer and (once) the schedule, zero the gradients."""
        if self.sharded:
            grad_norm: Any = clip_grad_norm(self.params, self.cfg.optim.max_grad_norm)
        else:
            grad_norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm)
        if grad_norm is not None:  # DeepSpeed clips inside its own step and reports no norm before it
            norm = float(grad_norm)  # the same on every process: gradients are reduced before they are clipped
            # under fp16 an overflow is expected: the loss scaler skips that update and lowers its scale
            if not math.isfinite(norm) and self.accelerator.scaler is None:
                raise self.diverged(self.step + 1, "gradient norm", norm)
            bag.add("optim/grad_norm", norm)
        bag.add("optim/lr", self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        skipped = not self.sharded and self.accelerator.optimizer_step_was_skipped
        if not skipped:  # fp16 overflow: no update, so no schedule step
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ---- step-wide statistics ------------------------------------------------------------------------------
    def tokens_per_micro(self, local_tokens: float) -> float:
        """The normaliser of a micro-batch's token sum for a token mean over the whole step (see module doc)."""
        return tokens_per_micro(self.accelerator, local_tokens, self.cfg.gradient_accumulation_steps)

    def gather_rows(self, values: torch.Tensor) -> tuple[torch.Tensor, slice]:
        """Every process's rows of an equally shaped tensor, in rank order, and the slice that is this process's."""
        return gather_rows(self.accelerator, values)

    # ---- divergence ----------------------------------------------------------------------------------------
    def check_loss(self, step: int, metrics: dict[str, float | None], key: str) -> None:
        """Stop before step `step` is logged or checkpointed when its loss (`metrics[key]`, reduced over every
        process, so the same everywhere) is not finite."""
        value = metrics.get(key)
        if value is not None and not math.isfinite(value):
            raise self.diverged(step, f"loss ({key})", value)

    def diverged(self, step: int, what: str, value: float) -> TrainingDiverged:
        """The one-line error (also in train.log) of a run stopped at `step` on a non-finite `what`."""
        newest = latest_checkpoint(self.out)
        kept = f"the newest checkpoint is {newest}" if newest else "no checkpoint was saved"
        message = (f"step {step}: the {what} is {value}, not a finite number; stopped before saving a checkpoint of "
                   f"it ({kept}): lower optim.lr or check the data")
        self.log.info(message)
        return TrainingDiverged(message)

    # ---- checkpoints, progress, end of run -----------------------------------------------------------------
    def save_checkpoint(self, model: Any, processor: Any, state: dict[str, Any]) -> Path:
        """checkpoint-{step}: Auto-loadable model + processor (and a LoRA run's adapter/), accelerate state, the
        recipe's own state; a sharded run adds its model and optimizer shards and the schedule."""
        weights, extra = None, None
        if self.sharded:
            # collective: the whole model on the main process (a LoRA model's base, adapters included)
            weights = full_state_dict(unwrap_peft(model))

            def extra(state_dir: Path) -> None:
                save_sharded(state_dir / SHARDED_DIR, self.module, self.optimizer)
                if self.is_main:
                    torch.save(self.scheduler.state_dict(), state_dir / SCHEDULER_FILE)

        return save_checkpoint(
            self.accelerator, self.out / f"checkpoint-{self.step}", model, processor,
            config_file=self.out / "config.yaml", state={"step": self.step, **state}, keep=self.cfg.save_total_limit,
            base_model=self.cfg.model.name_or_path, weights=weights, save_extra=extra,
        )

    def due_checkpoint(self) -> bool:
        """Whether the step just finished is a checkpoint step (every save_every steps, and the last)."""
        return self.step % self.cfg.save_every == 0 or self.step == self.cfg.max_steps

    @contextmanager
    def progress(self, label: str = "value") -> Iterator[Callable[..., None]]:
        """Step progress on the main process: callback (step, {name: value} or a value shown as `label`, seconds).

        A bar on a terminal, plain lines otherwise; train.log gets the plain lines either way.
        """
        from videor1.progress import step_progress

        with step_progress(
            self.cfg.max_steps, self.step, enabled=self.is_main, label=label, log=self.log.info
        ) as update:
            yield update

    def close(self) -> None:
        """Close the run's log and release its folder; a second call does nothing. The process group outlives the
        run: whoever started the processes ends it (`videor1.distributed.shutdown`, called by the CLI), so a caller
        may still gather results after `train`."""
        log = getattr(self, "log", None)  # absent when setup failed before the log was opened
        if log is not None:
            log.close()
        if self._lock is not None:
            self._lock.release()
