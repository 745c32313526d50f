"""The T-GRPO / GRPO recipe on accelerate: setup, then a loop of rollout -> score -> advantages -> update.

Differences from the original Video-R1 trainer, each on purpose:
- P >= 1 prompts per device, images and videos mixed; p and p̃ are per question (DESIGN §1).
- The vision encoder runs once per prompt: at rollout time its features are cached and reused for the
  reference, the old policy and (when the tower is frozen) the policy forward of every update.
- The shuffled group permutes the frames that were decoded for the ordered group; the file is read once.
- Media that fails to decode is skipped, counted and logged with its path; nothing is substituted.
- No device, frame budget or schedule length is hard-coded: all come from `TrainConfig`.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from videor1.bootstrap import ensure_data, ensure_model
from videor1.config import TrainConfig
from videor1.data.dataset import load_dataset
from videor1.models.inputs import (
    SampleMedia,
    load_sample_media,
    permute_video,
    processor_inputs,
    prompt_text,
    shuffle_permutation,
    temporal_patch_size,
    vision_factor,
)
from videor1.models.load import load_model, load_processor, prepare_for_training
from videor1.rewards import PRESETS
from videor1.rl.data import Loaded, PromptStream
from videor1.rl.grpo import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, grpo_loss
from videor1.rl.logprobs import CompletionScorer, detach_vision, encode_vision
from videor1.rl.metrics import MetricBag
from videor1.rl.rollout import Completions, generate_completions
from videor1.rl.scoring import (
    evaluate_rewards,
    group_outcomes,
    length_rewards,
    resolve_rewards,
    reward_columns,
    temporal_rewards,
    weighted_sum,
)
from videor1.runlog import RunLog, latest_checkpoint, save_checkpoint


@dataclass
class Rollout:
    """One micro-batch of P prompts with G scored completions each, ready for updates."""

    prompt: dict[str, torch.Tensor]  # processor outputs of the P prompts
    completions: Completions  # N = P*G
    owners: list[int]  # [N] prompt index of each completion
    advantages: torch.Tensor  # [N]
    vision: dict[str, Any] | None  # per-prompt vision features (detached) when the tower is frozen
    ref_logp: torch.Tensor | None  # [N, T]
    old_logp: torch.Tensor | None  # [N, T] only when num_iterations > 1


class GRPOTrainer:
    """T-GRPO / GRPO for Qwen-VL models; see `videor1 train --help` and configs/."""

    def __init__(self, config: TrainConfig, *, resume: bool = False):
        self.cfg = config
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision)
        set_seed(config.seed, device_specific=True)  # same init everywhere, different sampling per rank
        self.out = Path(config.output_dir)
        with self.accelerator.main_process_first():
            ensure_data(config.data)
            ensure_model(config.model, config.data.train_file)
        checkpoint = latest_checkpoint(self.out) if resume else None
        if resume and checkpoint is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.out}")
        self.step, self.skipped_prompts = 0, 0
        state = self._read_state(checkpoint) if checkpoint else None
        if state:
            self.step, self.skipped_prompts = state["step"], state["skipped_prompts"]
        self.log = RunLog(
            self.out, enabled=self.accelerator.is_main_process, tensorboard=config.tensorboard, resume_step=self.step
        )
        self.log.save_config(config)
        self._setup_models()
        self._setup_data()
        self._setup_optimization()
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint / "state"))
            self.stream.load_state_dict(state["streams"][self.accelerator.process_index])
            self.log.info(f"resumed from {checkpoint} at step {self.step}")

    # ---- setup -------------------------------------------------------------------------------------------
    def _setup_models(self) -> None:
        cfg = self.cfg.model
        self.processor = load_processor(cfg.name_or_path)
        model = load_model(cfg.name_or_path, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)
        model.generation_config.pad_token_id = self.processor.tokenizer.pad_token_id
        self.reference = None
        kl = self.cfg.algorithm.kl_coef > 0
        if kl and not cfg.lora.enabled:
            # a frozen copy of the starting weights; with LoRA the reference is the base (adapter disabled)
            self.reference = copy.deepcopy(model).requires_grad_(False).eval().to(self.accelerator.device)
        model = prepare_for_training(
            model,
            freeze_vision=cfg.freeze_vision,
            gradient_checkpointing=cfg.gradient_checkpointing,
            lora_r=cfg.lora.r if cfg.lora.enabled else None,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            lora_targets=cfg.lora.target_modules,
        )
        model.train()
        self.scorer = CompletionScorer(model)
        self.ref_scorer = CompletionScorer(self.reference) if self.reference is not None else None
        self.use_kl = kl

    def _setup_data(self) -> None:
        cfg = self.cfg
        loaded = load_dataset(cfg.data.train_file, cfg.data.media_root)
        for problem in loaded.problems:
            self.log.records("failures.jsonl", [{"step": 0, "kind": "row", "error": str(problem)}])
        if loaded.problems:
            self.log.info(f"{loaded.bad_rows} of {loaded.num_rows} rows rejected; see failures.jsonl")
        if not loaded.samples:
            raise ValueError(f"{cfg.data.train_file}: no valid rows")
        factor = vision_factor(self.processor)

        def load(sample: Any) -> SampleMedia:
            return load_sample_media(sample, cfg.media, factor)

        self.stream = PromptStream(
            loaded.samples, load, seed=cfg.seed, shuffle=cfg.data.shuffle,
            rank=self.accelerator.process_index, world_size=self.accelerator.num_processes,
            max_failure_fraction=cfg.data.max_failure_fraction, num_workers=cfg.data.num_workers,
            on_failure=self._media_failed,
        )
        self.rewards = resolve_rewards([(r.name, r.weight) for r in cfg.rewards])
        preset = PRESETS[cfg.algorithm.preset]
        algo = cfg.algorithm
        self.alpha = algo.alpha if algo.alpha is not None else preset.alpha
        self.mu = algo.mu if algo.mu is not None else preset.mu
        self.threshold = algo.threshold if algo.threshold is not None else preset.threshold
        self.num_shuffled = algo.num_shuffled or max(1, algo.num_generations // 2)

    def _setup_optimization(self) -> None:
        from transformers import get_scheduler

        optim = self.cfg.optim
        params = [p for p in self.scorer.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas)
        updates = self.cfg.max_steps * self.cfg.algorithm.num_iterations
        scheduler = get_scheduler(
            optim.scheduler, optimizer, num_warmup_steps=round(optim.warmup_ratio * updates),
            num_training_steps=updates,
        )
        self.scorer, self.optimizer, self.scheduler = self.accelerator.prepare(self.scorer, optimizer, scheduler)
        self.params = params

    @staticmethod
    def _read_state(checkpoint: Path) -> dict[str, Any]:
        import json

        return json.loads((checkpoint / "trainer_state.json").read_text())

    def _media_failed(self, sample: Any, error: Exception) -> None:
        path = str(sample.media_path)
        self.log.records("failures.jsonl", [{"step": self.step, "kind": "media", "row": sample.row, "path": path,
                                             "error": str(error)}])
        self.log.info(f"skipped row {sample.row}: {error}")

    @property
    def policy(self) -> Any:
        """The trainable model, outside any distributed wrapper (for generation and saving)."""
        return self.accelerator.unwrap_model(self.scorer).model

    # ---- one step ----------------------------------------------------------------------------------------
    def _next_prompts(self, bag: MetricBag) -> tuple[list[Loaded], list[str], Any]:
        """P decoded samples whose prompts fit max_prompt_tokens, their texts and processor inputs."""
        size, limit = self.cfg.prompts_per_device, self.cfg.generation.max_prompt_tokens
        kept: list[Loaded] = []
        skipped = 0
        while True:
            if skipped > len(self.stream.samples):
                raise ValueError(f"no prompt fits generation.max_prompt_tokens={limit}; see failures.jsonl")
            for item in self.stream.next_batch(size - len(kept)):
                bag.per_process("time/media", item.seconds)
                kept.append(item)
            texts = [prompt_text(self.processor, item.sample) for item in kept]
            # one processor call for the batch; prompt lengths come from its (left-padded) attention mask
            inputs = processor_inputs(self.processor, texts, [item.media for item in kept])
            lengths = inputs["attention_mask"].sum(1).tolist()
            too_long = [i for i, length in enumerate(lengths) if length > limit]
            if not too_long:
                return kept, texts, inputs.to(self.accelerator.device)
            skipped += len(too_long)
            for i in too_long:
                self.skipped_prompts += 1
                self.log.records("failures.jsonl", [{
                    "step": self.step, "kind": "prompt", "row": kept[i].sample.row,
                    "error": f"prompt of {lengths[i]} tokens exceeds generation.max_prompt_tokens={limit}",
                }])
            kept = [item for i, item in enumerate(kept) if i not in too_long]

    def _generate(self, inputs: Any, num: int) -> Completions:
        gen = self.cfg.generation
        return generate_completions(
            self.policy, self.processor.tokenizer, inputs, num_generations=num, max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
        )

    def _shuffled_media(self, batch: list[Loaded], videos: list[int]) -> list[SampleMedia]:
        """The video prompts' decoded frames, permuted (per frame or per temporal patch); nothing is re-read."""
        rank = self.accelerator.process_index
        generator = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + self.step) * 1_009 + rank)
        media = []
        for i in videos:
            video = batch[i].media.video
            order = shuffle_permutation(
                len(video.frame_indices), mode=self.cfg.algorithm.shuffle_mode,  # type: ignore[arg-type]
                temporal_patch=temporal_patch_size(self.processor), generator=generator,
            )
            media.append(SampleMedia(video=permute_video(video, order)))
        return media

    def _score(self, batch: list[Loaded], texts: list[str], completions: Completions, shuffled: Completions | None,
               videos: list[int], bag: MetricBag) -> torch.Tensor:
        """Total rewards [P, G]: weighted reward functions, + temporal bonus on videos, + length bonus."""
        G, P = self.cfg.algorithm.num_generations, len(batch)
        samples = [item.sample for item in batch]
        prompts = [t for t in texts for _ in range(G)]
        raw = evaluate_rewards(self.rewards, prompts, completions.texts, reward_columns(samples, G))
        per_function = {name: values.view(P, G) for name, values in raw.items()}  # name -> [P, G]
        for name, values in per_function.items():
            bag.mean(f"reward/{name}", values)
        total = weighted_sum(per_function, {r.name: r.weight for r in self.rewards})  # [P, G]
        accuracy = per_function.get("accuracy")
        is_video = torch.tensor([s.is_video for s in samples])
        bonus = torch.zeros_like(total)
        if shuffled is not None and accuracy is not None:
            accuracy_fn = [r for r in self.rewards if r.name == "accuracy"]
            video_samples = [samples[i] for i in videos]
            shuffled_prompts = [texts[i] for i in videos for _ in range(self.num_shuffled)]
            shuffled_acc = evaluate_rewards(
                accuracy_fn, shuffled_prompts, shuffled.texts, reward_columns(video_samples, self.num_shuffled)
            )["accuracy"].view(len(videos), self.num_shuffled)  # [V, G~]
            bonus, stats = temporal_rewards(
                accuracy, shuffled_acc, is_video, alpha=self.alpha, mu=self.mu, threshold=self.threshold
            )
            bag.mean("temporal/rate", stats.granted)
            bag.mean("temporal/p", stats.p)
            bag.mean("temporal/p_shuffled", stats.p_shuffled)
        else:
            for key in ("temporal/rate", "temporal/p", "temporal/p_shuffled"):
                bag.add(key, 0.0, 0)
        bag.mean("reward/temporal", bonus)
        total = total + bonus
        length = self.cfg.algorithm.length
        length_bonus = torch.zeros_like(total)
        if length.enabled and accuracy is not None:
            length_bonus = length_rewards(
                accuracy, completions.lengths.view(P, G).cpu(), threshold=self.threshold,
                min_tokens=length.min_tokens, max_tokens=length.max_tokens, bonus=length.bonus,
            )
        bag.mean("reward/length", length_bonus)
        total = total + length_bonus
        bag.mean("reward/total", total)
        if accuracy is not None:
            all_correct, all_wrong = group_outcomes(accuracy, self.threshold)
            bag.add("groups/all_correct", all_correct)
            bag.add("groups/all_wrong", all_wrong)
        return total

    def _advantages(self, total: torch.Tensor) -> torch.Tensor:
        algo = self.cfg.algorithm
        kwargs = {"scale": algo.scale_rewards} if algo.advantage == "grpo" else {}
        return ADVANTAGE_ESTIMATORS[algo.advantage](total, **kwargs)  # [P, G]

    def _rollout(self, bag: MetricBag) -> Rollout:
        """Sample, score and pre-compute everything an update needs for one micro-batch."""
        algo, device = self.cfg.algorithm, self.accelerator.device
        batch, texts, inputs = self._next_prompts(bag)
        start = time.perf_counter()
        completions = self._generate(inputs, algo.num_generations)
        videos = [i for i, item in enumerate(batch) if item.sample.is_video]
        shuffled = None
        if algo.temporal and videos:
            shuffled_inputs = processor_inputs(
                self.processor, [texts[i] for i in videos], self._shuffled_media(batch, videos)
            ).to(device)
            shuffled = self._generate(shuffled_inputs, self.num_shuffled)
            bag.mean("rollout/shuffled_length", shuffled.lengths.float())
        bag.per_process("time/generation", time.perf_counter() - start)
        generated = completions.mask.sum() + (shuffled.mask.sum() if shuffled is not None else 0)
        bag.total("perf/generated_tokens", float(generated))
        bag.total("rollout/prompt_mismatches", completions.prompt_mismatches)
        bag.total("data/prompts", len(batch))
        total = self._score(batch, texts, completions, shuffled, videos, bag)
        advantages = self._advantages(total).reshape(-1).to(device)  # [N]
        bag.mean("rollout/length", completions.lengths.float())
        owners = [p for p in range(len(batch)) for _ in range(algo.num_generations)]
        start = time.perf_counter()
        rollout = self._reference_pass(inputs, completions, owners, advantages)
        bag.per_process("time/logprobs", time.perf_counter() - start)
        self._log_rollouts(batch, completions, total, advantages)
        return rollout

    @torch.no_grad()
    def _reference_pass(self, inputs: Any, completions: Completions, owners: list[int], advantages: torch.Tensor
                        ) -> Rollout:
        """Encode vision once; reference and old-policy log-probs reuse it where the weights allow."""
        scorer = self.accelerator.unwrap_model(self.scorer)
        temperature = self.cfg.generation.temperature
        ids, mask = completions.ids, completions.mask
        frozen = self.cfg.model.freeze_vision
        # a frozen tower gives the same features to the policy, the old policy and the reference: encode once
        vision = detach_vision(encode_vision(scorer.model, inputs)) if frozen else None
        old_logp = None
        if self.cfg.algorithm.num_iterations > 1:
            old_logp, _ = scorer(inputs, ids, mask, owners, temperature=temperature, vision=vision)
        ref_logp = None
        if self.use_kl:
            if self.ref_scorer is not None:
                ref_logp, _ = self.ref_scorer(inputs, ids, mask, owners, temperature=temperature, vision=vision)
            else:
                with scorer.model.disable_adapter():  # LoRA: the reference is the base model
                    ref_logp, _ = scorer(inputs, ids, mask, owners, temperature=temperature, vision=vision)
        return Rollout(inputs, completions, owners, advantages, vision, ref_logp, old_logp)

    def _update(self, rollouts: list[Rollout], bag: MetricBag) -> None:
        """`num_iterations` optimizer updates over the step's micro-batches, gradients averaged over them."""
        algo = self.cfg.algorithm
        spec = POLICY_LOSSES[algo.loss_type]
        for _ in range(algo.num_iterations):
            for k, rollout in enumerate(rollouts):
                last = k == len(rollouts) - 1
                # gradients of all micro-batches are summed locally and synchronised once, on the last
                with nullcontext() if last else self.accelerator.no_sync(self.scorer):
                    start = time.perf_counter()
                    completions = rollout.completions
                    logp, _ = self.scorer(
                        rollout.prompt, completions.ids, completions.mask, rollout.owners,
                        temperature=self.cfg.generation.temperature, vision=rollout.vision,
                    )
                    old_logp = rollout.old_logp if rollout.old_logp is not None else logp.detach()
                    loss, stats = grpo_loss(
                        logp, old_logp, rollout.ref_logp, rollout.advantages, completions.mask,
                        loss_type=algo.loss_type, kl_coef=algo.kl_coef if self.use_kl else 0.0,
                        clip_low=algo.clip_low if algo.clip_low is not None else spec.clip_low,
                        clip_high=algo.clip_high if algo.clip_high is not None else spec.clip_high,
                        max_tokens=self.cfg.generation.max_new_tokens,
                    )
                    bag.per_process("time/logprobs", time.perf_counter() - start)
                    start = time.perf_counter()
                    self.accelerator.backward(loss / len(rollouts))
                    bag.per_process("time/backward", time.perf_counter() - start)
                for key, value in stats.items():
                    bag.add(key, float(value))
            grad_norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm)
            bag.add("optim/grad_norm", float(grad_norm))
            bag.add("optim/lr", self.scheduler.get_last_lr()[0])
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

    def train_step(self) -> dict[str, float | None]:
        """One step: rollouts for every micro-batch, then the updates; returns the step's reduced metrics."""
        bag = MetricBag()
        start = time.perf_counter()
        failed_before, skipped_before = self.stream.failed, self.skipped_prompts
        rollouts = [self._rollout(bag) for _ in range(self.cfg.gradient_accumulation_steps)]
        self._update(rollouts, bag)
        seconds = time.perf_counter() - start
        bag.total("data/skipped_media", self.stream.failed - failed_before)
        bag.total("data/skipped_prompts", self.skipped_prompts - skipped_before)
        bag.total("data/skipped_media_total", self.stream.failed)
        bag.per_process("perf/step_seconds", seconds)
        metrics = bag.reduce(self.accelerator)
        metrics["perf/tokens_per_s"] = metrics.pop("perf/generated_tokens") / max(metrics["perf/step_seconds"], 1e-9)
        return metrics

    # ---- logging and checkpoints -------------------------------------------------------------------------
    def _log_rollouts(self, batch: list[Loaded], completions: Completions, total: torch.Tensor,
                      advantages: torch.Tensor) -> None:
        G = self.cfg.algorithm.num_generations
        rows = []
        for n in range(min(self.cfg.log_rollouts, len(completions.texts))):
            sample = batch[n // G].sample
            rows.append({
                "step": self.step + 1, "problem_id": sample.problem_id, "data_type": sample.data_type,
                "problem_type": sample.problem_type, "answer": sample.answer, "completion": completions.texts[n],
                "reward": float(total.view(-1)[n]), "advantage": float(advantages[n]),
            })
        self.log.records("rollouts.jsonl", rows)

    def save_checkpoint(self) -> Path:
        """Model + processor (Auto-loadable), accelerate state, every rank's data position."""
        streams = gather_object([self.stream.state_dict()])
        state = {"step": self.step, "skipped_prompts": self.skipped_prompts, "streams": streams}
        return save_checkpoint(
            self.accelerator, self.out / f"checkpoint-{self.step}", self.policy, self.processor,
            config_file=self.out / "config.yaml", state=state, keep=self.cfg.save_total_limit,
        )

    def train(self) -> Path:
        """Run until max_steps, logging every step and checkpointing every save_every steps."""
        from videor1.progress import step_progress

        cfg = self.cfg
        self.log.info(f"training {cfg.model.name_or_path} for {cfg.max_steps} steps on {self.accelerator.device}")
        with step_progress(cfg.max_steps, self.step, enabled=self.accelerator.is_main_process) as progress:
            while self.step < cfg.max_steps:
                metrics = self.train_step()
                self.step += 1
                self.log.metrics(self.step, metrics)
                progress(self.step, metrics["reward/total"] or 0.0, metrics["perf/step_seconds"] or 0.0)
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        self.stream.close()
        self.log.close()
        return self.out / f"checkpoint-{self.step}"
