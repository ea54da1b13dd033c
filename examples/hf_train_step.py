"""The training step a Hugging Face-style trainer writes with bld: model outputs -> Distiller -> loss.

A Llama-3-tokenizer teacher and a GPT-2-tokenizer student, both causal LMs called the way
transformers' models are (``model(input_ids=..., attention_mask=..., output_hidden_states=True)``
returning ``.logits`` and ``.hidden_states``). Tiny randomly initialised torch models stand in for
the pretrained ones, so CI can run it; the token ids are the reference JS encoders' for Debian
fortunes (what ``tokenizer(text, add_special_tokens=False)`` would give). docs/06_trainers.md
walks through the regions between the [doc:...] markers.

Run by scripts/test-python.sh after the module is built:
    BLD_DATA_DIR=.cache/data PYTHONPATH=build-py /usr/bin/python3 examples/hf_train_step.py
"""
import os
import types

import torch

import bld_torch

data = os.environ.get("BLD_DATA_DIR", ".cache/data")
torch.manual_seed(0)


class TinyCausalLM(torch.nn.Module):
    """Stands in for a pretrained causal LM: the same call and outputs, a GRU inside."""

    def __init__(self, vocab_size, hidden=64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, hidden)
        self.rnn = torch.nn.GRU(hidden, hidden, batch_first=True)
        self.lm_head = torch.nn.Linear(hidden, vocab_size)

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        h, _ = self.rnn(self.embed(input_ids.clamp(min=0)))
        return types.SimpleNamespace(logits=self.lm_head(h), hidden_states=(h,) if output_hidden_states else None)


def encodings(count):
    """`count` fortunes of 4..40 tokens for both tokenizers: (text, teacher ids, student ids), from the
    reference encoders' outputs (the same texts, line by line)."""
    out = []
    with open(os.path.join(data, "ref", "llama3.encode.tsv")) as ft, open(os.path.join(data, "ref", "gpt2.encode.tsv")) as fs:
        for lt, ls in zip(ft, fs):
            _, text, tids = lt.rstrip("\n").split("\t")
            _, text_s, sids = ls.rstrip("\n").split("\t")
            assert text == text_s
            tids, sids = [int(x) for x in tids.split()], [int(x) for x in sids.split()]
            if 4 <= len(tids) <= 40 and 4 <= len(sids) <= 40:
                out.append((bytes.fromhex(text), tids, sids))
            if len(out) == count:
                return out
    return out


def pad(seqs, pad_id, left):
    """[B, S] ids and attention mask, padded on the left or the right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), width), dtype=torch.int64)
    for b, s in enumerate(seqs):
        lo = width - len(s) if left else 0
        ids[b, lo:lo + len(s)] = torch.tensor(s)
        mask[b, lo:lo + len(s)] = 1
    return ids, mask


# [doc:setup]
teacher_tok = bld_torch.load_tokenizer(f"{data}/tokenizers/llama3/tokenizer.json")
student_tok = bld_torch.load_tokenizer(f"{data}/tokenizers/gpt2")
# Built once: the teacher's sorted trie and SIMD row plan. shifted=True: the models' outputs at
# position i predict token i + 1, as a causal LM's do.
distiller = bld_torch.Distiller(teacher_tok, student_tok, heads=8, shifted=True)
byte_head = bld_torch.ByteHead(64, k=8)          # reads the student's last hidden state
# [/doc:setup]

teacher = TinyCausalLM(teacher_tok.vocab_size)
student = TinyCausalLM(student_tok.vocab_size)
optimizer = torch.optim.Adam(list(student.parameters()) + list(byte_head.parameters()), lr=3e-3)

# A batch of four texts, each encoded by both tokenizers without special tokens; the models'
# inputs start with their BOS (GPT-2 uses <|endoftext|> as one). The teacher's batch is
# left-padded, the student's right-padded: each side pads as its trainer likes.
texts, teacher_text_ids, student_text_ids = map(list, zip(*encodings(4)))
# [doc:batch]
bos_t = teacher_tok.special_id("<|begin_of_text|>")
bos_s = student_tok.special_id("<|endoftext|>")
t_ids, t_mask = pad([[bos_t] + ids for ids in teacher_text_ids], pad_id=bos_t, left=True)
s_ids, s_mask = pad([[bos_s] + ids for ids in student_text_ids], pad_id=bos_s, left=False)
# [/doc:batch]

losses = []
for step in range(30):
    # [doc:step]
    with torch.no_grad():
        t_out = teacher(input_ids=t_ids, attention_mask=t_mask)       # logits [B, S_t, V_t]
    targets = distiller.targets(t_out.logits, t_ids, s_ids,
                                teacher_mask=t_mask, student_mask=s_mask, texts=texts)

    s_out = student(input_ids=s_ids, attention_mask=s_mask, output_hidden_states=True)
    hidden = s_out.hidden_states[-1]                                  # [B, S_s, H]: position i predicts token i + 1
    byte_loss = bld_torch.bld_loss(byte_head(hidden), targets)        # [B, S_s, K, 260] vs targets [B, S_s, K]
    labels = s_ids.masked_fill(s_mask == 0, -100)                     # the usual token CE, shifted
    token_loss = torch.nn.functional.cross_entropy(
        s_out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    loss = token_loss + byte_loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # [/doc:step]
    losses.append(byte_loss.item())

# Token-head distillation: the same targets train the student's own token logits (no byte
# head); the term joins the usual token cross-entropy with a weight.
head_losses = []
for step in range(5):
    with torch.no_grad():
        t_out = teacher(input_ids=t_ids, attention_mask=t_mask)
    targets = distiller.targets(t_out.logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
    # [doc:token_head]
    s_out = student(input_ids=s_ids, attention_mask=s_mask)          # logits [B, S_s, V_s]
    labels = s_ids.masked_fill(s_mask == 0, -100)
    token_loss = torch.nn.functional.cross_entropy(
        s_out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    head_loss = distiller.token_head_loss(s_out.logits, s_ids, targets, student_mask=s_mask)
    loss = token_loss + 0.5 * head_loss                                # λ = 0.5
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # [/doc:token_head]
    head_losses.append(head_loss.item())
assert all(torch.isfinite(torch.tensor(head_losses))), head_losses
# The term's gradient reaches the student's output layer, and a small step along it lowers the term.
head_loss = distiller.token_head_loss(student(input_ids=s_ids).logits, s_ids, targets, student_mask=s_mask)
(g,) = torch.autograd.grad(head_loss, student.lm_head.weight)
with torch.no_grad():
    student.lm_head.weight -= 1e-2 * g / g.norm()
    lowered = distiller.token_head_loss(student(input_ids=s_ids).logits, s_ids, targets, student_mask=s_mask)
assert g.norm() > 0 and lowered < head_loss, (head_loss.item(), lowered.item())

# The paper's targets: the covering beam over every teacher tokenization of the text, with the
# teacher model asked for the rows of the contexts the beam follows (more rows than the canonical
# path's one per token: compute them once for a training set and reuse them).
short = sorted(range(len(texts)), key=lambda b: len(teacher_text_ids[b]))[:2]
# [doc:covering]
def teacher_fn(ids, lengths):                    # ids [B, T]: text ids, right-padded; lengths [B]
    bos = torch.full((ids.shape[0], 1), bos_t)
    return teacher(input_ids=torch.cat([bos, ids], 1)).logits  # [B, T + 1, V]: row r = after r tokens

paper = distiller.covering_targets(teacher_fn, [teacher_text_ids[b] for b in short],
                                   student_ids=[[bos_s] + student_text_ids[b] for b in short],
                                   method="beam", beam=10, epsilon=0.01, texts=[texts[b] for b in short])
print(paper.cost, [d.max().item() for d in paper.dropped])   # rows asked; mass pruned per text
s_short, m_short = pad([[bos_s] + student_text_ids[b] for b in short], pad_id=bos_s, left=False)
hidden = student(input_ids=s_short, attention_mask=m_short, output_hidden_states=True).hidden_states[-1]
paper_loss = bld_torch.bld_loss(byte_head(hidden), paper.targets)
# [/doc:covering]
# The same slots as the canonical path's targets (a BOS gives the first token a row too).
with torch.no_grad():
    t_short, tm_short = pad([[bos_t] + teacher_text_ids[b] for b in short], pad_id=bos_t, left=True)
    canonical = distiller.targets(teacher(input_ids=t_short, attention_mask=tm_short).logits, t_short, s_short,
                                  teacher_mask=tm_short, student_mask=m_short)
assert torch.equal(paper.targets.mask, canonical.mask) and torch.equal(paper.targets.true_bytes, canonical.true_bytes)
assert torch.isfinite(paper_loss) and paper.cost["contexts"] == sum(paper.teacher_rows)
assert all(r >= len(teacher_text_ids[b]) for r, b in zip(paper.teacher_rows, short))

# Trie-ordered rows for free: permute the teacher's output layer once, and its logits arrive in
# the order the projection reads fastest; the targets are the same.
with torch.no_grad():
    id_order = distiller.targets(teacher(input_ids=t_ids).logits, t_ids, s_ids, teacher_mask=t_mask, student_mask=s_mask)
# [doc:trie]
distiller_trie = bld_torch.Distiller(teacher_tok, student_tok, heads=8, shifted=True, row_order="trie")
perm = distiller_trie.permutation                       # column k of a row = id perm[k]
teacher.lm_head.weight.data = teacher.lm_head.weight.data[perm]
teacher.lm_head.bias.data = teacher.lm_head.bias.data[perm]
# [/doc:trie]
with torch.no_grad():
    trie_order = distiller_trie.targets(teacher(input_ids=t_ids).logits, t_ids, s_ids,
                                        teacher_mask=t_mask, student_mask=s_mask)
assert torch.equal(trie_order.slots, id_order.slots)
assert torch.allclose(trie_order.values, id_order.values, rtol=1e-4, atol=1e-6)

assert all(torch.isfinite(torch.tensor(losses))), losses
assert losses[-1] < 0.8 * losses[0], f"the byte loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
print(f"hf_train_step: {targets.active_slots} active slots of {targets.mask.numel()}, byte loss "
      f"{losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; {len(head_losses)} steps with the "
      f"token-head term, which a step along its gradient lowers {head_loss.item():.4f} -> {lowered.item():.4f}")
