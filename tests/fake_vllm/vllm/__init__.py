"""A test double of vLLM's offline API, for a CPU where vLLM cannot be installed.

It implements what ``cft_helpers.vllm_worker`` calls (``LLM(...)``, ``LLM.generate`` on
token-id prompts, ``SamplingParams`` with ``stop_token_ids``) with HF greedy generation, one
prompt at a time, and logs each call (and the interpreter that ran it) to the file named by
``FAKE_VLLM_LOG``. Tests use it to check our side of the
contract: the child process, the token ids, the cache lines, the order, the resume. It says
nothing about vLLM's own numerics.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace


class SamplingParams:
    def __init__(self, temperature: float = 1.0, max_tokens: int = 16, skip_special_tokens: bool = True,
                 stop_token_ids: list[int] | None = None):
        if temperature != 0.0:
            raise ValueError("the fake implements greedy decoding only")
        self.max_tokens, self.skip_special_tokens = max_tokens, skip_special_tokens
        self.stop_token_ids = list(stop_token_ids or [])


class LLM:
    def __init__(self, model: str, tokenizer: str | None = None, dtype: str = "auto", seed: int = 0,
                 trust_remote_code: bool = False, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        window = self.model.config.max_position_embeddings
        if max_model_len is not None and max_model_len > window:  # as vLLM refuses it
            raise ValueError(f"User-specified max_model_len ({max_model_len}) is greater than the derived "
                             f"max_model_len ({window})")
        self.tok = AutoTokenizer.from_pretrained(tokenizer or model)
        self.init = {"model": model, "dtype": dtype, "seed": seed, "max_model_len": max_model_len,
                     "gpu_memory_utilization": gpu_memory_utilization, "trust_remote_code": trust_remote_code}

    def generate(self, prompts, sampling_params: SamplingParams, use_tqdm: bool = True):
        import torch

        outs = []
        # as vLLM: the checkpoint's eos ends an answer, and so does every stop_token_ids entry
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
        stops = [*eos, *[i for i in sampling_params.stop_token_ids if i not in eos]] or None
        for p in prompts:
            ids = torch.tensor([p["prompt_token_ids"]])
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=sampling_params.max_tokens, eos_token_id=stops,
                                          pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
            text = self.tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=sampling_params.skip_special_tokens)
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=text)]))
        log = os.environ.get("FAKE_VLLM_LOG")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"init": self.init, "prompts": len(prompts), "python": sys.executable,
                                    "wrapped": os.environ.get("FAKE_VLLM_WRAPPER"),
                                    "stop_token_ids": sampling_params.stop_token_ids}) + "\n")
        return outs
