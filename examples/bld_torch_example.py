"""bld from PyTorch: teacher rows → byte targets → the BLD byte loss on a ByteHead, with autograd.

Run by scripts/test-python.sh after building the module (docs/02_embedding.md shows the regions
between the [doc:...] markers):
    BLD_DATA_DIR=.cache/data PYTHONPATH=build-py /usr/bin/python3 examples/bld_torch_example.py
"""
import os

import torch

import bld_torch

data = os.environ.get("BLD_DATA_DIR", ".cache/data")
line = open(os.path.join(data, "ref", "llama3.encode.tsv")).readline().rstrip("\n").split("\t")
text, teacher_ids = bytes.fromhex(line[1]), torch.tensor([int(x) for x in line[2].split()])
line = open(os.path.join(data, "ref", "gpt2.encode.tsv")).readline().rstrip("\n").split("\t")
student_ids = torch.tensor([int(x) for x in line[2].split()])
torch.manual_seed(0)

# [doc:python]
teacher = bld_torch.load_tokenizer(f"{data}/tokenizers/llama3/tokenizer.json")
student = bld_torch.load_tokenizer(f"{data}/tokenizers/gpt2")
# A teacher's logits for its own tokens of `text` (row j: token j given the tokens before it).
teacher_logits = torch.randn(len(teacher_ids), teacher.vocab_size)
teacher_logits[torch.arange(len(teacher_ids)), teacher_ids] += 8.0
targets, mask, true_bytes = bld_torch.canonical_targets(
    teacher_logits, teacher_ids, student_ids, teacher, student, k=10, text=text)

hidden = torch.randn(len(student_ids), 64)       # the student's hidden states, one per token
head = bld_torch.ByteHead(64, k=10)
loss = bld_torch.bld_loss(head(hidden), targets, true_bytes.clamp(min=0), mask,
                          lambda_byte=1.0, lambda_kl=0.1)   # eq. 5: heads summed, tokens averaged
loss.backward()                                           # gradients reach head.weight / head.bias
# [/doc:python]
assert torch.isfinite(loss) and head.weight.grad is not None
print(f"BLD byte loss {loss.item():.4f} over {int(mask.sum())} active slots")
