"""Does left padding, as Ludwig trains with it, change what a base model computes at the prompt's end?

    python benchmarks/left_padding.py [--models smollm2-135m gemma3-270m] [--lengths 300 700] [--pads 200 1348]

Ludwig joins each prompt and answer and left-pads the batch with id 0 (``add_left_padding``),
masks the pad token (``create_attention_mask``; both called here) and passes no position ids; ``prediction.Scorer`` left-pads too, with
position ids counted from the mask. For each packaged base model (converted into the cache as
``ards-rag train`` does), float32 and SDPA attention as in training, this takes the first
LENGTH tokens of synthetic notes and compares the last position's logits unpadded, left-padded
by PAD tokens without position ids (training) and with them (scoring). Prints one JSON line per
model: the largest absolute logit difference and the KL divergence from the unpadded
distribution, per length and padding. Differences at float rounding (1e-4) mean padding is
invisible to the model; a larger one would make the training batches differ from what is scored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[300, 700])
    parser.add_argument("--pads", nargs="+", type=int, default=[200, 1348])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from ludwig.utils.llm_utils import add_left_padding, create_attention_mask
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ards_rag.models import resolve_base_model
    from ards_rag.synthetic import generate_cohort

    torch.set_num_threads(args.threads)
    notes, _ = generate_cohort(60, 0)
    text = "\n\n".join(notes["text"].tolist())
    for name in args.models:
        path = resolve_base_model(name)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     attn_implementation="sdpa").eval()
        pad = tok.pad_token_id
        all_ids = tok.encode(text)
        rows = []
        with torch.inference_mode():
            for n in args.lengths:
                ids = torch.tensor(all_ids[:n])
                ref = model(input_ids=ids[None]).logits[0, -1]
                ref_logp = torch.log_softmax(ref, -1)
                for npad in args.pads:
                    # Ludwig's own padding and mask, as generate_merged_ids builds a training batch
                    x = add_left_padding(ids, n + npad)[None]
                    mask = create_attention_mask(x[0], tok)[None]
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    row: dict[str, object] = {"length": n, "pad": npad}
                    for way, extra in (("training", {}), ("scoring", {"position_ids": positions})):
                        out = model(input_ids=x, attention_mask=mask, **extra).logits[0, -1]
                        kl = torch.sum(ref_logp.exp() * (ref_logp - torch.log_softmax(out, -1)))
                        row[way] = {"max_abs_logit_diff": round(float((out - ref).abs().max()), 6),
                                    "kl": float(kl)}
                    rows.append(row)
        print(json.dumps({"benchmark": "left_padding", "model": name, "pad_token_id": pad,
                          "layers": model.config.num_hidden_layers,
                          "sliding_window": getattr(model.config, "sliding_window", None),
                          "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
