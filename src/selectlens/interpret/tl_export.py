"""Export a model as a local Hugging Face GPT-2 folder that TransformerLens's
``TransformerBridge.boot_transformers(folder)`` boots offline (``pip install transformer-lens``).

GPT-2 embeds token ids, while SelectLens reads continuous token vectors through
a linear read-in. The export gives the folder one vocabulary entry per token
feature, with embedding row ``i = read_in(e_i) = W_in[:, i] + b_in``: a sequence
of token ids runs through the bridge exactly as the matching one-hot token
vectors run through SelectLens (see :func:`one_hot_tokens`), so the two caches
agree. The read-out becomes row 0 of an ``lm_head`` without bias (GPT-2's has
none); the read-out bias is kept in ``selectlens.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from selectlens.model.gpt2 import SelectionTransformer

SPECIALS = ["<unk>", "<bos>", "<eos>", "<pad>"]


def one_hot_tokens(ids: Tensor, n_features: int) -> Tensor:
    """``[B, T]`` feature ids → ``[B, T, n_features]`` one-hot token vectors for SelectLens."""
    return torch.nn.functional.one_hot(ids, n_features).float()


def export_for_transformer_lens(model: SelectionTransformer, folder: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a tokenizer stub into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    spec = model.spec
    F, d = spec.n_features, spec.n_embd
    vocab = {f"f{i}": i for i in range(F)} | {s: F + j for j, s in enumerate(SPECIALS)}
    cfg = GPT2Config(
        vocab_size=len(vocab), n_positions=spec.n_positions, n_embd=d, n_layer=spec.n_layer, n_head=spec.n_head,
        layer_norm_epsilon=spec.layer_norm_eps, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"],
        tie_word_embeddings=False, architectures=["GPT2LMHeadModel"],
    )
    hf = GPT2LMHeadModel(cfg).eval()
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    W_in, b_in = sd["read_in.weight"], sd["read_in.bias"]  # [d, F], [d]
    wte = b_in.expand(len(vocab), d).clone()  # specials embed the zero vector: read_in(0) = b_in
    wte[:F] = W_in.T + b_in
    new = {"transformer.wte.weight": wte, "transformer.wpe.weight": sd["pos_embed.weight"],
           "transformer.ln_f.weight": sd["ln_final.weight"], "transformer.ln_f.bias": sd["ln_final.bias"]}
    lm_head = torch.zeros(len(vocab), d)
    lm_head[0] = sd["read_out.weight"][0]
    new["lm_head.weight"] = lm_head
    for l in range(spec.n_layer):
        b, h = f"blocks.{l}", f"transformer.h.{l}"
        for ours, theirs, conv in (("ln1", "ln_1", False), ("ln2", "ln_2", False), ("attn.qkv", "attn.c_attn", True),
                                   ("attn.out", "attn.c_proj", True), ("mlp.fc_in", "mlp.c_fc", True),
                                   ("mlp.fc_out", "mlp.c_proj", True)):
            w = sd[f"{b}.{ours}.weight"]
            new[f"{h}.{theirs}.weight"] = w.T.contiguous() if conv else w
            new[f"{h}.{theirs}.bias"] = sd[f"{b}.{ours}.bias"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"export mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out, safe_serialization=True)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>").save_pretrained(out)
    (out / "selectlens.json").write_text(json.dumps({"spec": spec.to_dict(), "read_out_bias": float(sd["read_out.bias"][0]),
                                                      "feature_tokens": [f"f{i}" for i in range(F)]}, indent=2))
    return out
