"""Run with an evaluator leg's python: the next-token logits of the captured prompts, computed directly.

    python direct_logits.py CAPTURE.jsonl BASE_MODEL_DIR EPOCH_DIR

For each captured row (capture_generate.py), the logits at the last prompt position from (a) the base model alone
and (b) the base model with the epoch's LoRA adapter loaded by PEFT (`PeftModel.from_pretrained`), both in fp32
on CPU; prints one JSON object: per row, the largest absolute difference of the captured logits from each, and the
versions of transformers and peft.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(capture: str, base_dir: str, epoch_dir: str) -> None:
    import peft
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows = [json.loads(line) for line in Path(capture).read_text(encoding="utf-8").splitlines() if line.strip()]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()

    def logits(model, ids):
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, -1].float()

    base_logits = [logits(base, r["input_ids"]) for r in rows]
    # the adapter: in the epoch directory, or in the one subdirectory of it that holds an adapter_config.json
    adapter = Path(epoch_dir)
    if not (adapter / "adapter_config.json").is_file():
        (adapter,) = [p.parent for p in adapter.glob("*/adapter_config.json")]
    tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
    out = []
    for row, b in zip(rows, base_logits, strict=True):
        captured = torch.tensor(row["next_token_logits"])
        p = logits(tuned, row["input_ids"])
        out.append(
            {
                "vs_base": float((captured - b).abs().max()),
                "vs_peft": float((captured - p).abs().max()),
                "peft_vs_base": float((p - b).abs().max()),
            }
        )
    print(json.dumps({"rows": out, "transformers": transformers.__version__, "peft": peft.__version__}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
