"""The PyTorch+PEFT side of scripts/gpu-check: the same shapes and steps as the Rust binary's
timings (crates/xlt-local/examples/gpu_check.rs), on a Qwen2.5-0.5B-shaped model with random
weights made on the GPU, so that the two can be read side by side.

    python3 scripts/gpu_check_torch.py OUT_FILE [DEVICE]

Appends its lines to OUT_FILE. Without torch, transformers or peft it says which is missing
and exits 0 (the Rust figures stand alone)."""

import statistics
import sys
import time

out_path = sys.argv[1]
device = int(sys.argv[2]) if len(sys.argv) > 2 else 0  # the CUDA ordinal, as gpu_check --device


def emit(line):
    print(line, flush=True)
    with open(out_path, "a") as f:
        f.write(line + "\n")


emit("## PyTorch + PEFT, the same shapes")
try:
    import torch
    import transformers
    import peft
except ImportError as e:
    emit(f"skipped: {e} (no PyTorch+PEFT figures)")
    sys.exit(0)

torch.cuda.set_device(device)
emit(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
     f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(device)}")

# Qwen2.5-0.5B-Instruct's config.json, as in gpu_check.rs.
cfg = transformers.Qwen2Config(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
    max_position_embeddings=32768, tie_word_embeddings=True, initializer_range=0.02,
)
SCORE_BATCH, SCORE_LEN, SCORE_REPS = 16, 256, 5
TRAIN_BATCH, TRAIN_LEN, TRAIN_STEPS = 8, 256, 6
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prompts(n, length, offset=0):
    ids = [[(i * 7919 + (r + offset) * 104729 + 17) % (cfg.vocab_size - 1) for i in range(length)]
           for r in range(n)]
    return torch.tensor(ids, device="cuda")


def model_of(dtype):
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype, attn_implementation="sdpa")
    return m.to("cuda")


def last_logits(m, ids):
    try:
        return m(input_ids=ids, logits_to_keep=1).logits
    except TypeError:
        return m(input_ids=ids).logits[:, -1:]


for name, dtype in [("F32", torch.float32), ("BF16", torch.bfloat16)]:
    m = model_of(dtype).eval()
    ids = prompts(SCORE_BATCH, SCORE_LEN)
    with torch.no_grad():
        torch.log_softmax(last_logits(m, ids).float(), -1)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(SCORE_REPS):
            torch.log_softmax(last_logits(m, ids).float(), -1)
        torch.cuda.synchronize()
    secs = (time.perf_counter() - t) / SCORE_REPS
    emit(f"scoring {name}: batch {SCORE_BATCH} x {SCORE_LEN} tokens, {secs * 1e3:.1f} ms per batch, "
         f"{SCORE_BATCH * SCORE_LEN / secs:.0f} tokens/s")
    del m

    m = model_of(dtype)
    m = peft.get_peft_model(m, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS))
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    times = []
    for step in range(TRAIN_STEPS):
        ids = prompts(TRAIN_BATCH, TRAIN_LEN, offset=step * TRAIN_BATCH)
        labels = ids.clone()
        labels[:, : TRAIN_LEN - 8] = -100
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = m(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    median = statistics.median(times[1:])
    emit(f"LoRA training {name}: r 16, batch {TRAIN_BATCH} x {TRAIN_LEN} tokens, {TRAIN_STEPS} steps, "
         f"median {median * 1e3:.1f} ms per step, {TRAIN_BATCH * TRAIN_LEN / median:.0f} tokens/s "
         f"(last loss {loss.item():.3f})")
    del m, opt
    torch.cuda.empty_cache()
