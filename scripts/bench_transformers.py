"""The Python side of `cargo run --release --example bench_local`: the same prompts scored
the same way (first-token log-probabilities of a chat prompt) with `transformers` in f32 on
CPU, unbatched and in left-padded batches (in input order, and sorted by length). Prints one
JSON object per mode.

    pip install torch transformers gguf accelerate
    python scripts/bench_transformers.py --model SmolLM2-135M-Instruct.Q4_1.gguf \
        --prompts prompts.jsonl [--batch 8]

`--prompts` is what bench_local writes: one {"messages": [...]} per line.
"""

import argparse
import json
import os
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def peak_mib() -> float:
    # VmHWM is this process's own peak. Linux carries ru_maxrss across exec, so under
    # `bench_local --python` it would report the Rust parent's peak instead.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.model))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    with open(args.prompts, encoding="utf-8") as f:
        chats = [json.loads(line)["messages"] for line in f if line.strip()]
    prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chats]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    tokens = sum(len(i) for i in ids)

    def report(mode: str, seconds: float) -> None:
        print(json.dumps({
            "engine": f"transformers {__import__('transformers').__version__} f32",
            "mode": mode,
            "questions": len(ids),
            "seconds": round(seconds, 3),
            "questions_per_s": round(len(ids) / seconds, 2),
            "prompt_tokens_per_s": round(tokens / seconds, 1),
            "peak_mib": round(peak_mib(), 1),
            "load_s": round(load_s, 2),
            "threads": torch.get_num_threads(),
        }), flush=True)

    with torch.no_grad():
        t0 = time.perf_counter()
        for i in ids:
            torch.log_softmax(model(torch.tensor([i])).logits[0, -1].float(), dim=-1)
        report("unbatched", time.perf_counter() - t0)

        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        by_length = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for mode, order in [(f"batch {args.batch}", list(range(len(ids)))),
                            (f"batch {args.batch}, sorted by length", by_length)]:
            t0 = time.perf_counter()
            for start in range(0, len(order), args.batch):
                chunk = [ids[i] for i in order[start:start + args.batch]]
                width = max(len(c) for c in chunk)
                input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk])
                mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
                logits = model(input_ids=input_ids, attention_mask=mask).logits[:, -1].float()
                torch.log_softmax(logits, dim=-1)
            report(mode, time.perf_counter() - t0)

        # Letter scoring (xlt's --scoring letters): the same batches sorted by length, and
        # each letter's log-sum-exp over every token whose text, stripped, is the letter.
        letter_ids = {l: [] for l in "ABCD"}
        for i in range(model.config.vocab_size):
            text = tok.decode([i]).strip()
            if text in letter_ids:
                letter_ids[text].append(i)
        index = [torch.tensor(letter_ids[l]) for l in "ABCD"]
        t0 = time.perf_counter()
        for start in range(0, len(by_length), args.batch):
            chunk = [ids[i] for i in by_length[start:start + args.batch]]
            width = max(len(c) for c in chunk)
            input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk])
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            torch.stack([torch.logsumexp(logprobs[:, i], dim=-1) for i in index], dim=-1)
        report(f"letters, batch {args.batch}, sorted by length", time.perf_counter() - t0)

if __name__ == "__main__":
    main()
