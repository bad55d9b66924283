"""The Python side of `cargo run --release --example bench_local -- --train`: the same chat
examples trained the same way with `transformers` + `peft` in f32 on CPU: LoRA (r, alpha =
2 r, dropout 0.05 on all seven projections, PEFT's initialization), AdamW at 2e-4, the loss
on the assistant's tokens only (labels -100 elsewhere, as `apply_chat_template`'s
assistant mask would give), right-padded batches with an attention mask, as a
`transformers` `Trainer` step does. The first batch is a warm-up step, not timed; the rest
are timed. Prints one JSON object.

    pip install torch transformers gguf accelerate peft
    python scripts/bench_peft.py --model SmolLM2-135M-Instruct.Q4_1.gguf \
        --examples examples.jsonl [--batch 8] [--rank 16]

`--examples` is what bench_local writes: one {"messages": [...]} per line, the last message
the assistant's answer. Tokens are the examples' own tokens (no padding).
"""

import argparse
import json
import os
import time

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

# Same directory: the scoring benchmark's peak-memory reader.
from bench_transformers import peak_mib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(0)
    model = get_peft_model(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)

    with open(args.examples, encoding="utf-8") as f:
        chats = [json.loads(line)["messages"] for line in f if line.strip()]
    examples = []
    for m in chats:
        prompt = tok.apply_chat_template(m[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(m, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert ids[: len(p_ids)] == p_ids, "the rendering with the answer does not begin with the prompt"
        examples.append((ids, [-100] * len(p_ids) + ids[len(p_ids):]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def step(batch) -> float:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss)

    batches = [examples[i : i + args.batch] for i in range(0, len(examples), args.batch)]
    step(batches[0])
    timed = batches[1:]
    tokens = sum(len(ids) for b in timed for ids, _ in b)
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "engine": f"peft {peft.__version__} + transformers {transformers.__version__} f32, {torch.get_num_threads()} threads",
                "examples_per_s": round(sum(len(b) for b in timed) / s, 3),
                "tokens_per_s": round(tokens / s, 1),
                "seconds_per_step": round(s / len(timed), 2),
                "peak_mib": round(peak_mib(), 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
