"""The T-GRPO / GRPO recipe: setup, then a loop of rollout -> score -> advantages -> update.

The shared skeleton (`videor1.recipe`: accelerator, model preparation, optimizer and schedule, accumulation,
checkpoints, clean exit) does the plumbing; this file is the RL loop only.

Differences from the original Video-R1 trainer, each on purpose:
- P >= 1 prompts per device, images and videos mixed; p and p̃ are per question (docs/design.md §1).
- The vision encoder runs once per prompt: with the tower frozen, its features are computed before the
  rollout and reused by the lean sampler's prefill, the reference, the old policy and the policy forward of
  every update.
- The shuffled group permutes the frames that were decoded for the ordered group; the file is read once.
  Shuffled by temporal patch, it also permutes the ordered prompts' pixels and vision features instead of
  calling the processor and the tower again (`videor1.models.patch_shuffle`).
- Media that fails to decode is skipped, counted and logged with its path; nothing is substituted.
- Batch-level statistics (advantage scaling, REINFORCE++ whitening, DAPO's token mean) span the whole step:
  every micro-batch on every process, as TRL computes them, not one micro-batch on one process.
- Rollouts sample only with the knobs in `generation` (never the checkpoint's repetition penalty or top-k),
  so the scorer's log-probs are those of the distribution that was sampled.
- No device, frame budget or schedule length is hard-coded: all come from `TrainConfig`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object

from videor1.config import TrainConfig
from videor1.data.dataset import load_dataset
from videor1.metrics import MetricBag
from videor1.models.generation import (
    Completions,
    SamplingParams,
    eos_token_ids,
    suppressed_token_ids,
)
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
from videor1.models.load import disable_dropout
from videor1.models.patch_shuffle import patch_order, shuffled_features, shuffled_inputs
from videor1.recipe import Recipe
from videor1.rl.advantages import ADVANTAGE_ESTIMATORS, informative_groups
from videor1.rl.data import Loaded, PromptStream
from videor1.rl.groups import Groups, choose_groups
from videor1.rl.logprobs import CompletionScorer, detach_vision, encode_vision
from videor1.rl.losses import grpo_loss, truncated_importance_weights
from videor1.rl.rollout import PromptBatch, build_rollout_engine
from videor1.rl.scoring import RewardRule, evaluate_rewards, resolve_rewards, reward_columns, total_rewards
from videor1.rl.temporal_advantages import (
    ema_std_advantages,
    joint_group_advantages,
    task_key,
    updated_task_stds,
)


@dataclass
class Rollout:
    """One micro-batch of P prompts with G scored completions each, ready for updates."""

    groups: Groups
    prompt: dict[str, torch.Tensor]  # processor outputs of the P prompts
    owners: list[int]  # [N] prompt index of each completion
    vision: dict[str, Any] | None  # per-prompt vision features (detached) when the tower is frozen
    ref_logp: torch.Tensor | None  # [N, T]
    old_logp: torch.Tensor | None  # [N, T] only when num_iterations > 1
    old_sampled_logp: torch.Tensor | None  # [N, T] the same under top-k / top-p, when they truncate (vLLM only)
    advantages: torch.Tensor | None = None  # [N], set once the whole step's rewards are known

    @property
    def completions(self) -> Completions:
        """The N completions being trained on."""
        return self.groups.completions


def shuffle_seed(seed: int, step: int, rank: int, draw: int) -> int:
    """A generator seed for the `draw`-th shuffled-frame draw of a step on a process: distinct per tuple."""
    return int(np.random.SeedSequence([seed, step, rank, draw]).generate_state(1, dtype=np.uint64)[0] >> 1)


def step_advantages(
    totals: list[torch.Tensor],
    estimate: Callable[[torch.Tensor], torch.Tensor],
    gather: Callable[[torch.Tensor], tuple[torch.Tensor, slice]],
) -> list[torch.Tensor]:
    """Each micro-batch's advantages [P, G], estimated once over the rewards of the whole step.

    totals: the k micro-batches' rewards [P, G] on this process; gather: (every process's rows, this one's
    slice). Batch-level scaling and whitening then see all k·P·W groups, as if one process held them all.
    """
    local = torch.cat(totals)  # [k*P, G]
    everything, mine = gather(local)  # [W*k*P, G]
    advantages = estimate(everything)[mine]  # [k*P, G]
    return list(advantages.split([t.shape[0] for t in totals]))


class GRPOTrainer:
    """T-GRPO / GRPO for Qwen-VL models; see `videor1 train --help` and configs/."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, overwrite: bool = False):
        self.cfg = config
        self.run = Recipe(config, resume=resume, overwrite=overwrite)
        # a setup that fails frees the run folder, so this process may start another run in it
        with self.run.closed_on_error():
            self._setup()

    def _setup(self) -> None:
        """Model, reference, data, scorers, optimizer, resume state and rollout engine."""
        config = self.cfg
        self.accelerator, self.log = self.run.accelerator, self.run.log
        self.skipped_prompts: int = self.run.state.get("skipped_prompts", 0)
        # temporal_signal=ema_std: each task's running reward std, saved with checkpoints for an exact resume
        self.task_stds: dict[str, float] = dict(self.run.state.get("task_stds", {}))
        self.use_kl = config.algorithm.kl_coef > 0
        self.processor, model, reference = self.run.load_model(reference=self.use_kl)
        if config.algorithm.disable_dropout:
            self.log.info(f"dropout off in the policy ({disable_dropout(model)} modules)")
        suppressed = suppressed_token_ids(self.processor.tokenizer)  # never sampled, so never scored
        scoring = config.algorithm.scoring
        chunks = config.model.logit_chunk_tokens
        self.ref_scorer = None
        if reference is not None:
            self.ref_scorer = CompletionScorer(reference, suppressed, scoring=scoring, chunk_tokens=chunks)
        self._setup_data()
        algo = config.algorithm
        self.sampling = SamplingParams(
            max_new_tokens=config.generation.max_new_tokens, temperature=config.generation.temperature,
            top_p=config.generation.top_p, top_k=config.generation.top_k,
        )
        self.estimate = ADVANTAGE_ESTIMATORS[algo.advantage]
        self.estimator_kwargs = {"scale": algo.scale_rewards} if algo.advantage == "grpo" else {}
        self.scorer = self.run.prepare(
            CompletionScorer(model, suppressed, scoring=scoring, chunk_tokens=chunks),
            num_updates=config.max_steps * algo.num_iterations, micro_batch_size=config.prompts_per_device,
        )
        self.run.restore()
        if self.run.checkpoint is not None:
            streams = self.run.state["streams"]
            if len(streams) != self.accelerator.num_processes:
                raise ValueError(
                    f"{self.run.checkpoint.name} was written by {len(streams)} processes and this run has "
                    f"{self.accelerator.num_processes}: resume it on {len(streams)} (each process's place in the data "
                    "stream is saved); its model.safetensors can start a new run on any count"
                )
            self.stream.load_state_dict(streams[self.accelerator.process_index])
        self._shuffle_draws = 0  # shuffled-frame draws so far in this step
        self.rollouts = build_rollout_engine(
            config, lambda: self.policy, self.processor, eos_token_ids(model, self.processor.tokenizer), self.sampling,
            device=self.run.device, process_index=self.accelerator.process_index, log=self.log.info,
        )

    @property
    def step(self) -> int:
        """Training steps completed."""
        return self.run.step

    @property
    def policy(self) -> Any:
        """The trainable model, outside any distributed wrapper (for generation and saving)."""
        return self.accelerator.unwrap_model(self.scorer).model

    def _setup_data(self) -> None:
        cfg = self.cfg
        loaded = load_dataset(cfg.data.train_file, cfg.data.media_root)
        self.log.records("failures.jsonl", [{"step": 0, "kind": "row", "error": str(p)} for p in loaded.problems])
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
        algo = cfg.algorithm
        # joint normalisation is the temporal signal itself: no bonus on top (p, p~ and the test are still logged)
        alpha = 0.0 if algo.temporal_signal == "joint" else algo.alpha
        self.reward_rule = RewardRule(
            weights={r.name: r.weight for r in self.rewards}, alpha=alpha, mu=algo.mu, threshold=algo.threshold,
            group_accuracy=algo.group_accuracy, length_bonus=algo.length.bonus if algo.length.enabled else None,
            length_min=algo.length.min_tokens, length_max=algo.length.max_tokens,
            overlong_cache=algo.overlong.cache_tokens if algo.overlong.enabled else None,
            max_tokens=cfg.generation.max_new_tokens,
        )

    def _media_failed(self, sample: Any, error: Exception) -> None:
        self.log.records("failures.jsonl", [{"step": self.step, "kind": "media", "row": sample.row,
                                             "path": str(sample.media_path), "error": str(error)}])
        self.log.info(f"skipped row {sample.row}: {error}")

    # ---- rollout: sample and score -----------------------------------------------------------------------
    def _next_prompts(self, size: int, bag: MetricBag) -> tuple[list[Loaded], list[str], Any]:
        """`size` decoded samples whose prompts fit max_prompt_tokens, their texts and processor inputs."""
        limit = self.cfg.generation.max_prompt_tokens
        kept: list[Loaded] = []
        skipped = 0
        while True:
            if skipped > len(self.stream.samples):
                raise ValueError(f"no prompt fits generation.max_prompt_tokens={limit}; see failures.jsonl")
            start = time.perf_counter()
            batch = self.stream.next_batch(size - len(kept))
            # time/media: decoding work (off the critical path with data.num_workers); time/media_wait: what this
            # step waited for it
            bag.per_process("time/media_wait", time.perf_counter() - start)
            for item in batch:
                bag.per_process("time/media", item.seconds)
                kept.append(item)
            texts = [prompt_text(self.processor, item.sample) for item in kept]
            # one processor call for the batch; prompt lengths come from its (left-padded) attention mask
            inputs = processor_inputs(self.processor, texts, [item.media for item in kept])
            lengths = inputs["attention_mask"].sum(1).tolist()
            too_long = [i for i, length in enumerate(lengths) if length > limit]
            if not too_long:
                return kept, texts, inputs.to(self.run.device)
            skipped += len(too_long)
            for i in too_long:
                self.skipped_prompts += 1
                self.log.records("failures.jsonl", [{
                    "step": self.step, "kind": "prompt", "row": kept[i].sample.row,
                    "error": f"prompt of {lengths[i]} tokens exceeds generation.max_prompt_tokens={limit}",
                }])
            kept = [item for i, item in enumerate(kept) if i not in too_long]

    def _shuffled_media(self, batch: list[Loaded], videos: list[int]) -> tuple[list[SampleMedia], list[list[int]]]:
        """The video prompts' decoded frames permuted (per frame or per temporal patch), and each permutation;
        nothing is re-read.

        Each call of a step (every micro-batch, every dynamic-sampling round) draws its own permutations; the
        counter restarts with each step, so a resumed run draws the same ones.
        """
        seed = shuffle_seed(self.cfg.seed, self.step, self.accelerator.process_index, self._shuffle_draws)
        self._shuffle_draws += 1
        generator = torch.Generator().manual_seed(seed)
        media, orders = [], []
        for i in videos:
            video = batch[i].media.video
            order = shuffle_permutation(
                len(video.frame_indices), mode=self.cfg.algorithm.shuffle_mode,  # type: ignore[arg-type]
                temporal_patch=temporal_patch_size(self.processor), generator=generator,
            )
            media.append(SampleMedia(video=permute_video(video, order)))
            orders.append(order)
        return media, orders

    @torch.no_grad()
    def _frozen_vision(self, inputs: Any) -> dict[str, Any] | None:
        """The prompts' media through the frozen vision tower (detached), or None when the tower trains."""
        if not self.cfg.model.freeze_vision:
            return None
        return detach_vision(encode_vision(self.policy, inputs))

    def _shuffled_prompts(self, batch: list[Loaded], texts: list[str], videos: list[int], ordered: PromptBatch
                          ) -> PromptBatch:
        """The video prompts on shuffled frames; by temporal patch, the ordered prompts' pixels and features
        permuted (no processor call, no tower pass)."""
        video_texts, (media, permutations) = [texts[i] for i in videos], self._shuffled_media(batch, videos)
        if self.cfg.algorithm.shuffle_mode == "patch":
            orders = [patch_order(p, temporal_patch_size(self.processor)) for p in permutations]
            inputs = shuffled_inputs(ordered.inputs, videos, orders)
            vision = None if ordered.vision is None else shuffled_features(ordered.vision, orders)
        else:  # single frames change which frames share a temporal patch: the processor and tower see new pairs
            inputs = processor_inputs(self.processor, video_texts, media).to(self.run.device)
            vision = None if ordered.vision is None else self._frozen_vision(inputs)
        return PromptBatch(video_texts, media, inputs, vision)

    def _score(self, batch: list[Loaded], texts: list[str], completions: Completions, shuffled: Completions | None,
               videos: list[int], bag: MetricBag) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Total rewards [P, G] of a micro-batch (`videor1.rl.scoring.total_rewards`), its statistics logged; with
        temporal_signal=joint also the shuffled completions' [P, G~] (the same terms, NaN rows for images)."""
        G, P = self.cfg.algorithm.num_generations, len(batch)
        samples = [item.sample for item in batch]
        prompts = [t for t in texts for _ in range(G)]
        raw = evaluate_rewards(self.rewards, prompts, completions.texts, reward_columns(samples, G))
        per_function = {name: values.view(P, G) for name, values in raw.items()}  # name -> [P, G]
        shuffled_accuracy = None
        if shuffled is not None and "accuracy" in per_function:
            G_shuffled = self.cfg.algorithm.num_shuffled
            accuracy_fn = [r for r in self.rewards if r.name == "accuracy"]
            shuffled_accuracy = evaluate_rewards(
                accuracy_fn, [texts[i] for i in videos for _ in range(G_shuffled)], shuffled.texts,
                reward_columns([samples[i] for i in videos], G_shuffled),
            )["accuracy"].view(len(videos), G_shuffled)  # [V, G~]
        is_video = torch.tensor([s.is_video for s in samples])  # [P]
        lengths = completions.lengths.view(P, G).cpu()  # [P, G]
        total, stats = total_rewards(per_function, lengths, is_video, shuffled_accuracy, self.reward_rule)
        for key, values in stats.items():
            bag.mean(key, values)
        shuffled_total = None
        if self.cfg.algorithm.temporal_signal == "joint":
            shuffled_total = torch.full((P, self.cfg.algorithm.num_shuffled), float("nan"))  # [P, G~]
            if shuffled is not None:
                shuffled_total[is_video] = self._shuffled_totals(samples, texts, shuffled, videos)
        return total, shuffled_total

    def _shuffled_totals(self, samples: list[Any], texts: list[str], shuffled: Completions,
                         videos: list[int]) -> torch.Tensor:
        """The shuffled completions' total rewards [V, G~]: every term of the ordered ones but the temporal bonus."""
        G_shuffled = self.cfg.algorithm.num_shuffled
        raw = evaluate_rewards(self.rewards, [texts[i] for i in videos for _ in range(G_shuffled)], shuffled.texts,
                               reward_columns([samples[i] for i in videos], G_shuffled))
        per_function = {name: values.view(len(videos), G_shuffled) for name, values in raw.items()}
        lengths = shuffled.lengths.view(len(videos), G_shuffled).cpu()
        total, _ = total_rewards(per_function, lengths, torch.ones(len(videos), dtype=torch.bool), None,
                                 self.reward_rule)
        return total  # [V, G~]

    def _sample_groups(self, size: int, bag: MetricBag) -> Groups:
        """`size` prompts, G completions each (+ G~ on shuffled frames for videos under T-GRPO), scored."""
        algo = self.cfg.algorithm
        batch, texts, inputs = self._next_prompts(size, bag)
        start = time.perf_counter()
        videos = [i for i, item in enumerate(batch) if item.sample.is_video]
        # the lean sampler's prefill takes the features the scorer will reuse; other engines read pixels
        vision = self._frozen_vision(inputs) if self.rollouts.takes_vision else None
        ordered = PromptBatch(texts, [item.media for item in batch], inputs, vision)
        shuffled_prompts = self._shuffled_prompts(batch, texts, videos, ordered) if algo.temporal and videos else None
        completions, shuffled = self.rollouts.sample(ordered, shuffled_prompts)
        # every process adds every key, video or not, so the step's metrics reduce as one tensor
        bag.mean("rollout/shuffled_length", shuffled.lengths.float() if shuffled is not None else torch.zeros(0))
        bag.per_process("time/generation", time.perf_counter() - start)
        generated = completions.mask.sum() + (shuffled.mask.sum() if shuffled is not None else 0)
        bag.total("perf/generated_tokens", float(generated))
        bag.total("rollout/prompt_mismatches", completions.prompt_mismatches)
        totals, shuffled_totals = self._score(batch, texts, completions, shuffled, videos, bag)
        return Groups(batch, texts, inputs, completions, totals, shuffled_totals, vision)

    def _micro_batch_groups(self, bag: MetricBag) -> Groups:
        """P groups to train on; with dynamic sampling, groups with equal rewards are replaced (bounded rounds)."""
        size, dynamic = self.cfg.prompts_per_device, self.cfg.algorithm.dynamic_sampling
        rounds = [self._sample_groups(size, bag)]
        if dynamic.enabled:
            useful = int(informative_groups(rounds[0].totals).sum())
            while useful < size and len(rounds) <= dynamic.max_rounds:
                rounds.append(self._sample_groups(size - useful, bag))
                useful += int(informative_groups(rounds[-1].totals).sum())
            sampled = Groups.concat(rounds, self.processor.tokenizer.pad_token_id)
            informative = informative_groups(sampled.totals).tolist()
            bag.add("groups/informative", sum(informative), len(informative))
            bag.total("rollout/extra_rounds", len(rounds) - 1)
            # exactly `size` groups: every process's micro-batch has the same shape (the step's advantages gather
            # them), also when the extra rounds found nothing and the first round's groups are kept
            groups = sampled.select(choose_groups(informative, size))
        else:
            groups = rounds[0]
        bag.total("data/prompts", size)
        bag.mean("rollout/length", groups.completions.lengths.float())
        return groups

    def _rollout(self, bag: MetricBag) -> Rollout:
        """Sample and score one micro-batch, and pre-compute what its updates need (reference log-probs)."""
        groups = self._micro_batch_groups(bag)
        inputs = groups.inputs
        if inputs is None:  # regrouped by dynamic sampling: one processor call for the chosen prompts
            inputs = processor_inputs(self.processor, groups.texts, [item.media for item in groups.items])
            inputs = inputs.to(self.run.device)
        owners = [p for p in range(len(groups.items)) for _ in range(self.cfg.algorithm.num_generations)]
        start = time.perf_counter()
        rollout = self._reference_pass(groups, inputs, owners)
        bag.per_process("time/logprobs", time.perf_counter() - start)
        return rollout

    @torch.no_grad()
    def _reference_pass(self, groups: Groups, inputs: Any, owners: list[int]) -> Rollout:
        """Encode vision once; reference and old-policy log-probs reuse it where the weights allow."""
        scorer = self.accelerator.unwrap_model(self.scorer)
        temperature = self.cfg.generation.temperature
        ids, mask = groups.completions.ids, groups.completions.mask
        # a frozen tower gives the same features to the policy, the old policy and the reference: encode once
        # (before the rollout, where the sampler took them too and the prompts were not regrouped since)
        vision = groups.vision if groups.vision is not None else self._frozen_vision(inputs)
        old_logp = old_sampled_logp = None
        if self.cfg.algorithm.num_iterations > 1:
            old_logp, _, old_sampled_logp = scorer(inputs, ids, mask, owners, temperature=temperature, vision=vision,
                                                   **self._sampler_truncation)
        ref_logp = None
        if self.use_kl:
            if self.ref_scorer is not None:
                ref_logp = self.ref_scorer(inputs, ids, mask, owners, temperature=temperature, vision=vision).logp
            else:
                with scorer.model.disable_adapter():  # LoRA: the reference is the base model
                    ref_logp = scorer(inputs, ids, mask, owners, temperature=temperature, vision=vision).logp
        return Rollout(groups, inputs, owners, vision, ref_logp, old_logp, old_sampled_logp)

    # ---- advantages and update ---------------------------------------------------------------------------
    def _assign_advantages(self, rollouts: list[Rollout], bag: MetricBag) -> None:
        """Advantages from the whole step's rewards (every micro-batch, every process); each rollout gets its rows."""
        algo = self.cfg.algorithm
        totals = [r.groups.totals for r in rollouts]
        estimate: Callable[[torch.Tensor], torch.Tensor] = partial(self.estimate, **self.estimator_kwargs)
        if algo.temporal_signal == "joint":  # ordered and shuffled rewards side by side: [P, G + G~]
            totals = [torch.cat([r.groups.totals, r.groups.shuffled_totals], dim=1) for r in rollouts]
            estimate = partial(joint_group_advantages, group_size=algo.num_generations)
        elif algo.temporal_signal == "ema_std":
            # every process sees the step's rewards and tasks in the same order, so the running stds agree
            tasks = gather_object([task_key(item.sample) for r in rollouts for item in r.groups.items])
            estimate = partial(self._ema_std_estimate, tasks)
        advantages = step_advantages(totals, estimate, self.run.gather_rows)
        for rollout, rows in zip(rollouts, advantages, strict=True):
            rollout.advantages = rows.reshape(-1).to(self.run.device)  # [N]
            bag.mean("advantage/abs_mean", rows.abs())

    def _ema_std_estimate(self, tasks: list[str], rewards: torch.Tensor) -> torch.Tensor:
        """EMA-GRPO: the step's groups update their tasks' running reward std, which then scales them."""
        self.task_stds = updated_task_stds(self.task_stds, rewards, tasks, decay=self.cfg.algorithm.ema_decay)
        scale = torch.tensor([self.task_stds[task] for task in tasks], dtype=rewards.dtype)
        return ema_std_advantages(rewards, scale)

    def _update(self, rollouts: list[Rollout], bag: MetricBag) -> None:
        """`num_iterations` optimizer updates, each over all of the step's micro-batches."""
        algo = self.cfg.algorithm
        self.rollouts.sleep()
        # DAPO / CISPO token means are over every completion token of the step, on every process
        tokens_per_micro = self.run.tokens_per_micro(float(sum(r.completions.mask.sum() for r in rollouts)))
        for _ in range(algo.num_iterations):
            for rollout in rollouts:
                with self.run.micro_batch(self.scorer):
                    start = time.perf_counter()
                    completions = rollout.completions
                    on_policy = rollout.old_logp is None
                    logp, _, sampled_logp = self.scorer(
                        rollout.prompt, completions.ids, completions.mask, rollout.owners,
                        temperature=self.cfg.generation.temperature, vision=rollout.vision,
                        **(self._sampler_truncation if on_policy else {}),
                    )
                    # one update per step when num_iterations is 1: the weights that sampled are the ones scored
                    if on_policy:
                        old_logp, old_sampled_logp = logp.detach(), sampled_logp
                    else:
                        old_logp, old_sampled_logp = rollout.old_logp, rollout.old_sampled_logp
                    weights = self._importance_weights(
                        old_logp if old_sampled_logp is None else old_sampled_logp, completions, bag
                    )
                    loss, stats = grpo_loss(
                        logp, old_logp, rollout.ref_logp, rollout.advantages, completions.mask,
                        loss_type=algo.loss_type, kl_coef=algo.kl_coef if self.use_kl else 0.0,
                        clip_low=algo.clip_low, clip_high=algo.clip_high,
                        max_tokens=self.cfg.generation.max_new_tokens, num_tokens=tokens_per_micro,
                        importance_weights=weights,
                    )
                    bag.per_process("time/logprobs", time.perf_counter() - start)
                    start = time.perf_counter()
                    self.run.backward(loss)
                    bag.per_process("time/backward", time.perf_counter() - start)
                for key, value in stats.items():
                    bag.add(key, float(value))
            self.run.optimizer_step(bag)
            self.rollouts.sync_weights(self.policy)  # the next rollouts sample from the weights just updated

    @property
    def _sampler_truncation(self) -> dict[str, Any]:
        """Scorer arguments that also yield log-probs under vLLM's truncated sampling distribution (else none).

        vLLM reports the sampled tokens' log-probs after top-k / top-p and renormalisation; the trainer's health
        metric and TIS compare them with the trainer's own log-probs of that same distribution, so a gap means
        the engines differ, not that top_p < 1.
        """
        generation = self.cfg.generation
        if not self.rollouts.off_policy or (generation.top_p >= 1.0 and not generation.top_k):
            return {}
        return {"top_k": generation.top_k, "top_p": generation.top_p}

    def _importance_weights(self, old_sampled_logp: torch.Tensor, completions: Completions, bag: MetricBag) -> Any:
        """TIS weights against an off-policy sampler (None for the HF engines or when off); logs the engines' gap.

        old_sampled_logp [N, T]: the old policy's log-probs under the distribution the rollouts were drawn from
        (top-k / top-p applied), so both the gap and the weights compare like with like. The HF engine draws
        from exactly that distribution, so a weight of 1 there: both engines optimise the same objective.
        """
        if not self.rollouts.off_policy:
            return None
        mask = completions.mask.bool()
        old = old_sampled_logp.detach()
        # a token vLLM sampled that the trainer's nucleus leaves out (the engines part at its edge): no gap to take
        inside = torch.isfinite(old) & mask
        bag.total("engine/outside_nucleus", float((mask & ~inside).sum()))
        gap = (old - completions.logprobs).abs()[inside]  # trainer vs sampler, per token
        bag.mean("engine/logprob_gap_mean", gap)
        bag.maximum("engine/logprob_gap_max", gap)
        cap = self.cfg.generation.vllm.importance_cap
        if cap is None:
            return None
        weights = truncated_importance_weights(old, completions.logprobs, completions.mask, cap)  # [N, T]
        bag.mean("engine/importance_weight", weights[mask])
        return weights

    def train_step(self) -> dict[str, float | None]:
        """One step: rollouts for every micro-batch, advantages over all of them, then the updates."""
        bag = MetricBag()
        start = time.perf_counter()
        self._shuffle_draws = 0
        failed_before, skipped_before = self.stream.failed, self.skipped_prompts
        # 1-2) sample and score every micro-batch: G completions per prompt (+ G~ shuffled), total rewards [P, G];
        # sharded, with the whole model gathered once: processes decode and score different numbers of forwards
        models = [self.scorer] + ([self.ref_scorer] if self.ref_scorer is not None else [])
        with self.run.whole_model(*models):
            rollouts = [self._rollout(bag) for _ in range(self.cfg.gradient_accumulation_steps)]
        # 3) advantages over the whole step's rewards, every process's included
        self._assign_advantages(rollouts, bag)
        for rollout in rollouts:
            self._log_rollouts(rollout)
        # 4-5) loss, backward and one optimizer step per iteration; the rollout engine gets the new weights
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
    def _log_rollouts(self, rollout: Rollout) -> None:
        G, groups = self.cfg.algorithm.num_generations, rollout.groups
        rows = []
        for n in range(min(self.cfg.log_rollouts, len(groups.completions.texts))):
            sample = groups.items[n // G].sample
            rows.append({
                "step": self.step + 1, "problem_id": sample.problem_id, "data_type": sample.data_type,
                "problem_type": sample.problem_type, "answer": sample.answer,
                "completion": groups.completions.texts[n], "reward": float(groups.totals.view(-1)[n]),
                "advantage": float(rollout.advantages[n]),
            })
        self.log.records("rollouts.jsonl", rows)

    def save_checkpoint(self) -> Any:
        """Model + processor (Auto-loadable), accelerate state, every rank's data position."""
        streams = gather_object([self.stream.state_dict()])
        return self.run.save_checkpoint(
            self.policy, self.processor,
            {"skipped_prompts": self.skipped_prompts, "streams": streams, "task_stds": self.task_stds},
        )

    def train(self) -> Any:
        """Run until max_steps, logging every step and checkpointing every save_every steps."""
        cfg = self.cfg
        self.log.info(f"training {cfg.model.name_or_path} for {cfg.max_steps} steps on {self.run.device}")
        with self.run.closed_on_error(), self.run.progress("reward") as progress:
            while self.step < cfg.max_steps:
                metrics = self.train_step()
                self.run.step += 1
                self.run.check_loss(self.step, metrics, "loss/total")
                self.log.metrics(self.step, metrics)
                shown = {"reward": metrics["reward/total"], "accuracy": metrics.get("reward/accuracy")}
                progress(self.step, shown, metrics["perf/step_seconds"] or 0.0)
                if self.run.due_checkpoint():
                    self.save_checkpoint()
        self.stream.close()
        self.rollouts.close()
        self.run.close()
        return self.run.out / f"checkpoint-{self.step}"
