"""EDITABLE: a small GPT trained for a fixed wall-clock budget, then scored by the frozen evaluator.

Everything in this file may change: model, optimizer, schedule, batch size. The budget, the data
and the evaluator live in prepare.py, which is frozen. The constants below are plain literals
(`NAME = number`, one per line) so that search agents can parse and rewrite them.
"""
import math
import os
import sys
import time

T_START = time.time()
# Spin-waiting OpenMP threads collapse throughput (10x and more) when another process shares the
# cores; a short spin keeps full speed on an idle machine. Must be set before torch loads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import torch
import torch.nn as nn
import torch.nn.functional as F

import prepare

# -- hyperparameters -------------------------------------------------------------------------------
DEPTH = 2  # transformer blocks
N_EMBD = 96  # model width
N_HEAD = 4  # attention heads (must divide N_EMBD)
MLP_RATIO = 4  # hidden width of the MLP, in multiples of N_EMBD
SEQ_LEN = 256  # training context (<= prepare.MAX_SEQ_LEN, the evaluation context)
BATCH_SIZE = 8  # sequences per step
LEARNING_RATE = 0.004  # peak learning rate
MIN_LR_FRAC = 0.1  # final learning rate, as a fraction of the peak
WARMUP_FRAC = 0.05  # share of the time budget spent warming the learning rate up
WEIGHT_DECAY = 0.1  # AdamW decoupled weight decay (matrices only)
BETA1 = 0.9
BETA2 = 0.95
GRAD_CLIP = 1.0  # max gradient norm (0 disables)
DROPOUT = 0.0
ROPE_BASE = 10000.0  # rotary position embedding base (sets the range of wavelengths)
SEED = 1337
COMPILE = 0  # 1: torch.compile the model (compilation time is not counted in the budget)
EVAL_BATCH_SIZE = 32  # sequences per evaluation forward pass (speed only, not the result)
MAX_LOSS_RATIO = 3.0  # abort when the training loss exceeds this multiple of ln(vocab size)
LOG_EVERY_S = 10.0  # seconds between step lines
PROGRESS_EVERY = 0.05  # share of the budget between `progress:` lines (the harness stops doomed runs on them)
PEAK_FLOPS = 989e12  # H100 bf16 dense peak, for the MFU estimate on CUDA


# -- the model -------------------------------------------------------------------------------------

def rotate(x, cos, sin):
    """Rotary position embedding: rotate pairs of channels by position-dependent angles."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        q, k = rotate(q, cos[:T], sin[:T]), rotate(k, cos[:T], sin[:T])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=DROPOUT if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(N_EMBD, MLP_RATIO * N_EMBD, bias=False)
        self.proj = nn.Linear(MLP_RATIO * N_EMBD, N_EMBD, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.attn = SelfAttention()
        self.ln2 = nn.LayerNorm(N_EMBD)
        self.mlp = MLP()
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x, cos, sin):
        x = x + self.drop(self.attn(self.ln1(x), cos, sin))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    """model(idx (B, T) token ids) -> logits (B, T, vocab_size): the interface of prepare.evaluate_bpb."""

    def __init__(self, vocab_size, block_size):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, N_EMBD)
        half = N_EMBD // N_HEAD // 2  # rotary angles: position x frequency, per head channel pair
        angles = torch.outer(torch.arange(block_size).float(), ROPE_BASE ** (-torch.arange(half).float() / half))
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.drop = nn.Dropout(DROPOUT)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied input and output embeddings
        for name, p in self.named_parameters():
            if p.dim() == 2:  # residual projections start smaller, as the residual stream adds DEPTH of them
                std = 0.02 / math.sqrt(2 * DEPTH) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx):
        x = self.drop(self.wte(idx))
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        return self.head(self.ln_f(x))


def lr_at(frac):
    """Learning rate after `frac` of the time budget: linear warmup, then cosine decay to MIN_LR_FRAC."""
    if frac < WARMUP_FRAC:
        return LEARNING_RATE * frac / WARMUP_FRAC
    progress = min(1.0, (frac - WARMUP_FRAC) / max(1e-9, 1.0 - WARMUP_FRAC))
    return LEARNING_RATE * (MIN_LR_FRAC + (1.0 - MIN_LR_FRAC) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.manual_seed(SEED)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        sync = torch.cuda.synchronize
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or cores or 1))
        autocast = lambda: torch.autocast("cpu", enabled=False)
        sync = lambda: None

    budget = prepare.time_budget()
    try:
        meta = prepare.load_meta()
    except prepare.DataError as e:
        fail(str(e))
    vocab_size = meta["vocab_size"]
    if SEQ_LEN > prepare.MAX_SEQ_LEN:
        fail(f"SEQ_LEN {SEQ_LEN} is above MAX_SEQ_LEN {prepare.MAX_SEQ_LEN}")
    model = GPT(vocab_size, prepare.MAX_SEQ_LEN).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LEARNING_RATE, betas=(BETA1, BETA2), fused=device.type == "cuda")
    step_model = torch.compile(model) if COMPILE else model
    batches = prepare.train_batches(BATCH_SIZE, SEQ_LEN, device, seed=SEED)
    max_loss = MAX_LOSS_RATIO * math.log(vocab_size)

    def loss_on(x, y):
        with autocast():
            logits = step_model(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    # Warm-up (compilation, allocator): a forward and backward pass whose gradients are thrown away.
    x, y = next(batches)
    loss_on(x, y).backward()
    optimizer.zero_grad(set_to_none=True)
    sync()
    print(f"device: {device} | params: {num_params / 1e6:.2f}M | budget: {budget:g}s | "
          f"tokens/step: {BATCH_SIZE * SEQ_LEN}", flush=True)

    t0 = time.perf_counter()
    step, elapsed, last_log = 0, 0.0, 0.0
    window_loss, window_steps, next_progress = 0.0, 0, PROGRESS_EVERY  # mean training loss since the last point
    while elapsed < budget:
        lr = lr_at(elapsed / budget)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        loss = loss_on(x, y)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()  # also synchronises CUDA, so the clock below is honest
        step += 1
        elapsed = time.perf_counter() - t0
        if not math.isfinite(loss_value) or loss_value > max_loss:
            fail(f"training diverged at step {step}: loss {loss_value} (lr {lr:.3g}); "
                 f"lower LEARNING_RATE or check the model")
        if elapsed - last_log >= LOG_EVERY_S or step == 1:
            last_log = elapsed
            print(f"step {step:6d} | loss {loss_value:.4f} | lr {lr:.2e} | {elapsed:6.1f}/{budget:g}s", flush=True)
        window_loss, window_steps = window_loss + loss_value, window_steps + 1
        if elapsed >= min(next_progress, 1.0) * budget:
            t = min(1.0, elapsed / budget)
            print(f"progress: t={t:.3f} train_loss={window_loss / window_steps:.4f}", flush=True)
            window_loss, window_steps = 0.0, 0
            next_progress = (math.floor(t / PROGRESS_EVERY + 1e-9) + 1) * PROGRESS_EVERY
    training_seconds = time.perf_counter() - t0

    with autocast():
        val_bpb = prepare.evaluate_bpb(model, device, batch_size=EVAL_BATCH_SIZE)
    if not math.isfinite(val_bpb):
        fail(f"val_bpb is {val_bpb}")
    prepare.save_model(model)  # for the harness's trusted evaluation (python prepare.py --evaluate)
    tokens_per_sec = step * BATCH_SIZE * SEQ_LEN / training_seconds
    summary = {
        "val_bpb": val_bpb,
        "training_seconds": training_seconds,
        "total_seconds": time.time() - T_START,
        "peak_memory_mb": peak_memory_mb(device),
        "num_steps": step,
        "num_params_M": num_params / 1e6,
        "tokens_per_sec": tokens_per_sec,
    }
    if device.type == "cuda":
        # ~6 FLOPs per parameter per token (forward + backward) plus the attention scores.
        flops_per_token = 6 * num_params + 12 * DEPTH * N_EMBD * SEQ_LEN
        summary["mfu_percent"] = 100 * flops_per_token * tokens_per_sec / PEAK_FLOPS
    summary["data_hash"] = meta["data_hash"]
    summary["device"] = device.type
    prepare.print_summary(summary)


if __name__ == "__main__":
    main()
