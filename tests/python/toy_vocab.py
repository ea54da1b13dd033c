"""Toy vocabularies for the Python tests: a tiktoken rank file (one base64 token and its rank a
line) and a longest-match tokenization (any ids that spell the text will do for a teacher)."""
import base64


def write_tiktoken(path, tokens):
    with open(path, "w") as f:
        for i, t in enumerate(tokens):
            f.write(f"{base64.b64encode(t).decode()} {i}\n")


def greedy(tokens, text):
    """Longest-match ids of `text` under `tokens` (a list of byte strings)."""
    ids, o = [], 0
    while o < len(text):
        best = max((i for i, t in enumerate(tokens) if text.startswith(t, o)), key=lambda i: len(tokens[i]))
        ids.append(best)
        o += len(tokens[best])
    return ids
