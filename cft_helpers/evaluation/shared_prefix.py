"""lm-eval's HF model with faster request execution: shared prefixes are computed once.

lm-eval builds the requests, filters the answers and computes every metric; only how the model
runs the requests changes (``evaluation.engine: cft``, the default; ``lm_eval`` runs lm-eval's own
``HFLM`` unchanged). lm-eval 0.4 runs each (context, continuation) pair as its own full
sequence, so a multiple-choice item computes its context once per choice, and it computes the
vocabulary projection at every position; its generation pads each batch of 32 prompts to the
longest. Neither has a switch for what we need (``logits_cache`` only helps one-token
continuations), so this subclass replaces the two request loops:

- **Log-likelihood** (multiple choice, completion, per-byte response likelihood): the distinct
  contexts of a batch run once, and their longest common prefix (the chat template's system turn)
  runs once for the whole batch; every continuation then runs on the context's key/value cache,
  and the vocabulary projection is computed only at the scored positions.
- **Greedy generation**: prompts sorted by length; each batch's common prefix runs once, the rest
  right-padded; finished rows leave the batch. A row ends at an end-of-sequence token, at the
  first stop string in its decoded text, or at ``max_gen_toks``; the answer is decoded and cut at
  the first stop string exactly as lm-eval cuts it.

The numbers are lm-eval's up to float32 rounding (the same sums in another order:
``tests/test_evaluation_engine.py`` pins log-likelihoods to 1e-4 and identical answers, metrics
and per-item scores; ``benchmarks/bench_evaluation.py`` measures both on the default suite).
Models whose logits are more than ``lm_head(final hidden state)`` (soft-capping, logit scales)
and requests longer than the model's window run through lm-eval's own code.

Both engines (``LaunchHFLM`` is lm-eval's ``HFLM`` with the two additions) take part in a
launch of several processes (``accelerate launch``, ``torchrun``): lm-eval's ``HFLM`` given a
model in memory assumes one process, so its rank and world size are set here from the process
group, and lm-eval's evaluator then gives each process its shard of every task's items and
gathers the per-item results on rank 0. And both stop an answer at ``stop_token_ids`` (eos and
the chat template's end of turn, ``generation.stop_token_ids``), not at eos alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from cft_helpers.progress import StageProgress

from cft_helpers.batching import PASS_COST, common_prefix_length, plan_batches

# Architectures whose logits are exactly lm_head(last hidden state) (checked in their
# transformers 5 modelling code); anything else falls back to lm-eval's own request loops.
PLAIN_LOGITS = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3")
_CLUSTER = 16  # rows whose first 16 tokens agree (the chat template's system turn) share one prefix pass


def _select_rows(cache, rows: torch.Tensor, config):
    """A new cache holding rows ``rows`` (repeats allowed) of ``cache``, which stays as it is."""
    from transformers import DynamicCache

    out = DynamicCache(config=config)
    for li, layer in enumerate(cache.layers):
        out.update(layer.keys[rows], layer.values[rows], li)
    return out


class LaunchHFLM(HFLM):
    """lm-eval's ``HFLM`` on a model in memory, one data-parallel shard per process of a launch,
    answers stopped at ``stop_token_ids`` as well as at the model's eos."""

    stage = "evaluating"  # what the progress lines call this model's evaluation (the harness names it)

    def __init__(self, *args, stop_token_ids=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_ids = [int(i) for i in stop_token_ids or []]
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # what HFLM sets itself only for a model it loads by name under accelerate
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()

    def all_gather(self, tensor):
        """Every process's ``tensor``, concatenated (0-d tensors stacked), as accelerate's gather."""
        if self.world_size <= 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if self.stop_ids:  # HF generate stops at any of them (else only the generation config's eos)
            generation_kwargs.setdefault("eos_token_id", self.stop_ids)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


class SharedPrefixHFLM(LaunchHFLM):
    """``HFLM`` (lm-eval 0.4) whose log-likelihood and greedy-generation loops share prefixes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = getattr(self.model, "config", None)
        self._fast = (self.backend == "causal" and getattr(cfg, "model_type", None) in PLAIN_LOGITS
                      and not getattr(cfg, "final_logit_softcapping", None)
                      and self.model.get_output_embeddings() is not None)
        if self._fast:  # transformers 5.24 renamed past_key_values to cache (the old name warns)
            import inspect

            self._cache_kw = ("cache" if "cache" in inspect.signature(self._decoder().forward).parameters
                              else "past_key_values")

    # ------------------------------------------------------------------ model passes
    def _decoder(self):
        return self.model.get_decoder()

    def _run(self, cache, mask: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor,
             tok_mask: torch.Tensor):
        """Run right-padded ``tokens`` (B, T) after what ``cache`` holds (B rows, padded: ``mask``),
        each row continuing at its own true length. Returns (hidden (B, T, H), new mask)."""
        positions = lengths[:, None] + torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        mask = torch.cat([mask, tok_mask], dim=1)
        out = self._decoder()(input_ids=tokens, attention_mask=mask, position_ids=positions,
                              **{self._cache_kw: cache}, use_cache=True)
        return out.last_hidden_state, mask

    def _prefill(self, rows: list[list[int]]):
        """Run prompts into one key/value cache and return (cache, mask (B, width), lengths (B,),
        hidden state at each row's last token); rows keep their order, padding is masked.

        Rows that open alike (same first ``_CLUSTER`` tokens: the chat template's system turn)
        form a cluster whose common prefix runs once; each cluster's rest runs in groups of
        similar length, chosen to minimise padded tokens plus a fixed cost per forward pass
        (``batching.PASS_COST`` tokens: every pass reads all weights, which a few short rows cannot
        amortise). The groups' caches are then padded to one width."""
        from transformers import DynamicCache

        dev = self.device
        clusters: dict[tuple[int, ...], list[int]] = {}
        for i in sorted(range(len(rows)), key=lambda i: rows[i]):
            clusters.setdefault(tuple(rows[i][:_CLUSTER]), []).append(i)
        parts, placed = [], []
        for members in clusters.values():
            shared = common_prefix_length([rows[i] for i in members])
            if len(members) * shared < 2 * PASS_COST:  # the extra pass would cost more than it saves
                shared = 0
            prefix = None
            if shared:
                prefix = DynamicCache(config=self.model.config)
                self._decoder()(input_ids=torch.tensor([rows[members[0]][:shared]], device=dev),
                                position_ids=torch.arange(shared, device=dev)[None, :],
                                **{self._cache_kw: prefix}, use_cache=True)
            by_length = sorted(members, key=lambda i: len(rows[i]))
            for group in plan_batches([len(rows[i]) - shared for i in by_length], self._token_budget()):
                idx = [by_length[g] for g in group]
                parts.append(self._prefill_group([rows[i] for i in idx], shared, prefix))
                placed += idx
        if len(parts) == 1:
            cache, mask, lengths, last = parts[0]
        else:
            width = max(m.shape[1] for _, m, _, _ in parts)
            cache = parts[0][0]
            for li, layer in enumerate(cache.layers):
                layer.keys = torch.cat([F.pad(c.layers[li].keys, (0, 0, 0, width - m.shape[1])) for c, m, _, _ in parts])
                layer.values = torch.cat([F.pad(c.layers[li].values, (0, 0, 0, width - m.shape[1]))
                                          for c, m, _, _ in parts])
            mask = torch.cat([F.pad(m, (0, width - m.shape[1])) for _, m, _, _ in parts])
            lengths = torch.cat([ln for _, _, ln, _ in parts])
            last = torch.cat([h for _, _, _, h in parts])
        inverse = torch.empty(len(rows), dtype=torch.long)
        inverse[torch.tensor(placed)] = torch.arange(len(rows))
        inverse = inverse.to(dev)
        for layer in cache.layers:
            layer.batch_select_indices(inverse)
        return cache, mask[inverse], lengths[inverse], last[inverse]

    def _prefill_group(self, rows: list[list[int]], shared: int, prefix):
        """Rows whose first ``shared`` tokens are in ``prefix`` (a batch-1 cache, or None)."""
        from transformers import DynamicCache

        dev = self.device
        b = len(rows)
        cache = DynamicCache(config=self.model.config)
        if prefix is not None:
            for li, layer in enumerate(prefix.layers):
                cache.update(layer.keys.expand(b, -1, -1, -1).contiguous(),
                             layer.values.expand(b, -1, -1, -1).contiguous(), li)
        mask = torch.ones((b, shared), dtype=torch.long, device=dev)
        rest = [r[shared:] for r in rows]
        width = max(len(r) for r in rest)
        tokens = torch.full((b, width), self._pad_id(), dtype=torch.long, device=dev)
        tok_mask = torch.zeros((b, width), dtype=torch.long, device=dev)
        for i, r in enumerate(rest):
            tokens[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            tok_mask[i, :len(r)] = 1
        hidden, mask = self._run(cache, mask, torch.full((b,), shared, device=dev), tokens, tok_mask)
        last = hidden[torch.arange(b, device=dev), torch.tensor([len(r) - 1 for r in rest], device=dev)]
        return cache, mask, torch.tensor([len(r) for r in rows], device=dev), last

    def _batch_rows(self) -> int:
        """``evaluation.batch_size`` (32 where lm-eval was asked for "auto")."""
        return self.batch_size if isinstance(self.batch_size, int) else 32

    def _token_budget(self) -> int:
        """Cache tokens one batch may hold: ``evaluation.batch_size`` x 256."""
        return self._batch_rows() * 256

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else 0

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)

    # ------------------------------------------------------------------ log-likelihood
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if not self._fast:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        fits = [i for i, (_, ctx, cont) in enumerate(requests)
                if ctx and cont and len(ctx) + len(cont) <= self.max_length + 1]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        fit_set = set(fits)
        rest = [i for i in range(len(requests)) if i not in fit_set]
        if rest:  # over the window (lm-eval truncates them from the left): lm-eval's own loop
            for i, r in zip(rest, super()._loglikelihood_tokens([requests[i] for i in rest], disable_tqdm=True)):
                results[i] = r
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i in fits:
            by_context.setdefault(tuple(requests[i][1]), []).append(i)
        # Batches of contexts by a token budget: a context's cache is copied once per request
        # (its continuations run on it), so the budget counts context tokens x requests.
        contexts = sorted(by_context, key=lambda c: (len(c), c))
        budget = self._token_budget()
        batches, current, n = [], [], 0
        for c in contexts:
            k = len(c) * len(by_context[c])
            if current and n + k > budget:
                batches.append(current)
                current, n = [], 0
            current.append(c)
            n += k
        if current:
            batches.append(current)
        pbar = StageProgress(f"{self.stage} · loglikelihood", total=len(fits), unit="requests",
                             enabled=not disable_tqdm and self.rank == 0)
        with torch.no_grad():
            for batch in batches:
                self._score_batch(requests, batch, by_context, results)
                pbar.update(sum(len(by_context[c]) for c in batch))
        pbar.close()
        for i in fits:
            self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def _score_batch(self, requests, batch, by_context, results) -> None:
        dev = self.device
        cache, mask, lengths, last = self._prefill([list(c) for c in batch])
        reqs = [(row, i) for row, c in enumerate(batch) for i in by_context[c]]
        conts = [requests[i][2] for _, i in reqs]
        # Continuations past their first token run on their context's cache, in groups of
        # similar length (each group its own copy of the cache rows it needs).
        more: dict[int, torch.Tensor] = {}
        longer = sorted((j for j, c in enumerate(conts) if len(c) > 1), key=lambda j: len(conts[j]))
        for group in plan_batches([len(conts[j]) - 1 for j in longer], self._token_budget()):
            js = [longer[g] for g in group]
            rows = torch.tensor([reqs[j][0] for j in js], device=dev)
            sub = _select_rows(cache, rows, self.model.config)
            width = max(len(conts[j]) for j in js) - 1
            tokens = torch.full((len(js), width), self._pad_id(), dtype=torch.long, device=dev)
            tok_mask = torch.zeros_like(tokens)
            for r, j in enumerate(js):
                tokens[r, :len(conts[j]) - 1] = torch.tensor(conts[j][:-1], dtype=torch.long)
                tok_mask[r, :len(conts[j]) - 1] = 1
            hidden, _ = self._run(sub, mask[rows], lengths[rows], tokens, tok_mask)
            for r, j in enumerate(js):
                more[j] = hidden[r, :len(conts[j]) - 1]
        states = []  # per request, the positions that predict its continuation's tokens
        for j, ((row, _), cont) in enumerate(zip(reqs, conts)):
            states.append(last[row:row + 1])
            if len(cont) > 1:
                states.append(more[j])
        logprobs = self._logprobs(torch.cat(states))  # one projection for the whole batch
        start = 0
        for (_, i), cont in zip(reqs, conts):
            lp = logprobs[start:start + len(cont)]  # position k predicts cont[k]
            start += len(cont)
            target = torch.tensor(cont, dtype=torch.long, device=dev)
            greedy = bool((lp.argmax(dim=-1) == target).all())
            results[i] = (float(lp.gather(1, target[:, None]).sum()), greedy)

    # ------------------------------------------------------------------ greedy generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not self._fast:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        args = [r.args for r in requests]
        greedy = [i for i, (_, kw) in enumerate(args) if not kw.get("do_sample")
                  and not kw.get("temperature") and "max_length" not in kw]
        out: list[str | None] = [None] * len(args)
        greedy_set = set(greedy)
        others = [i for i in range(len(args)) if i not in greedy_set]
        if others:  # sampling: lm-eval's own loop
            for i, s in zip(others, super().generate_until([requests[i] for i in others], disable_tqdm=True)):
                out[i] = s
        groups: dict[str, list[int]] = {}
        for i in greedy:
            groups.setdefault(repr(sorted(args[i][1].items())), []).append(i)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        eos_ids = self._eos_ids()
        pbar = StageProgress(f"{self.stage} · generation", total=len(greedy), unit="requests",
                             enabled=not disable_tqdm and self.rank == 0)
        limit = self._batch_rows()
        with torch.no_grad():
            for idx in groups.values():
                kwargs = normalize_gen_kwargs(dict(args[idx[0]][1]), self.max_gen_toks)
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
                max_gen = kwargs.pop("max_gen_toks")
                enc = self._encode_prompts([args[i][0] for i in idx], self.max_length - max_gen)
                order = sorted(range(len(idx)), key=lambda k: len(enc[k]))
                # Batches by the token budget (prompt + answer per row), at least batch_size rows:
                # a decoding step reads every weight however few rows it carries.
                chunks, current = [], []
                for k in order:
                    if current and len(current) >= limit and \
                            (len(current) + 1) * (len(enc[k]) + max_gen) > self._token_budget():
                        chunks.append(current)
                        current = []
                    current.append(k)
                chunks.append(current)
                for chunk in chunks:
                    texts = self._greedy([enc[k] for k in chunk], max_gen, until, eos_ids)
                    for k, text in zip(chunk, texts):
                        i = idx[k]
                        s = postprocess_generated_text(generation=text, stop=until, think_end_token=(
                            self.think_end_token if isinstance(self.think_end_token, str) else None))
                        out[i] = s
                        self.cache_hook.add_partial("generate_until", args[i], s)
                    pbar.update(len(chunk))
        pbar.close()
        return out

    def _eos_ids(self) -> set[int]:
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        return {int(i) for i in [*ids, self.eot_token_id, *self.stop_ids] if i is not None}

    def _encode_prompts(self, contexts: list[str], max_ctx_len: int) -> list[list[int]]:
        """Token ids of each prompt as lm-eval's ``tok_batch_encode`` gives them (same special
        tokens, left truncation), without the padding."""
        ids, mask = self.tok_batch_encode(contexts, left_truncate_len=max_ctx_len, truncation=self.truncation)
        return [row[m.bool()].tolist() for row, m in zip(ids, mask)]

    def _greedy(self, prompts: list[list[int]], max_new: int, until: list[str], eos_ids: set[int]) -> list[str]:
        dev = self.device
        cache, mask, lengths, last = self._prefill(prompts)
        b = len(prompts)
        generated: list[list[int]] = [[] for _ in range(b)]
        active = list(range(b))  # rows (of the original batch) still generating, in cache order
        stops = [s for s in until if s]
        hidden = last
        for step in range(max_new):
            next_tok = self.model.get_output_embeddings()(hidden).argmax(dim=-1).tolist()
            keep = []
            for pos, row in enumerate(active):
                generated[row].append(next_tok[pos])
                done = next_tok[pos] in eos_ids or any(s in self.tok_decode(generated[row]) for s in stops)
                if not done:
                    keep.append(pos)
            if not keep or step == max_new - 1:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=dev)
                for layer in cache.layers:
                    layer.batch_select_indices(sel)
                mask, lengths = mask[sel], lengths[sel]
            tokens = torch.tensor([[generated[active[p]][-1]] for p in keep], dtype=torch.long, device=dev)
            active = [active[p] for p in keep]
            out, mask = self._run(cache, mask, lengths, tokens, torch.ones_like(tokens))
            lengths = lengths + 1
            hidden = out[:, -1]
        return [self.tok_decode(g) for g in generated]
