"""The input token table while training: a gradient written for the rows a step used, and an optimizer that
holds only the rows the training texts use. Both give the same weights as training the whole table
densely (tested in tests/test_cpu_step.py); they only skip work and memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from taskembed.data import Encoded


class EmbeddingRows:
    """The input embedding table's gradient, written only for the rows a step used.

    Dense, an embedding's gradient is a fresh table of zeros every step (30,522 x 384 floats for
    MiniLM, about 8 ms of a 130 ms CPU step to allocate, fault in and fill) of which a batch touches a
    few hundred rows. Here the table computes a sparse gradient (its rows and their values), and
    `densify` writes it into one reused buffer: the rows of the previous step are zeroed, the new
    ones added. The optimizer and gradient clipping see the same dense gradient as before; the
    gradient norm reads only its touched rows (`norm_view`), since the others are zero: reading the
    whole table cost about 1.5 ms a step.
    """

    def __init__(self, embedding: torch.nn.Embedding):
        self.embedding = embedding
        self.buffer = torch.zeros_like(embedding.weight)
        self.rows = torch.zeros(0, dtype=torch.long, device=embedding.weight.device)

    def densify(self) -> None:
        grad = self.embedding.weight.grad
        if grad is None or not grad.is_sparse:  # frozen, or also used densely elsewhere (autograd then summed densely)
            return
        self.buffer.index_fill_(0, self.rows, 0.0)
        indices = grad._indices()[0]  # uncoalesced: a token used twice in the batch appears twice
        self.buffer.index_add_(0, indices, grad._values())
        self.rows = indices.unique()
        self.embedding.weight.grad = self.buffer

    def norm_view(self, grad: torch.Tensor) -> torch.Tensor:
        """What the gradient norm should read for `grad`: the touched rows when it is this buffer (every
        other row is zero), else `grad` itself."""
        return self.buffer.index_select(0, self.rows) if grad is self.buffer else grad

    @classmethod
    @contextmanager
    def of(cls, model, enabled: bool) -> Iterator["EmbeddingRows | None"]:
        """Within this block the model's input embedding (a plain nn.Embedding) computes sparse gradients; yields None where it is not used."""
        embedding = model.get_input_embeddings() if enabled else None
        if type(embedding) is not torch.nn.Embedding or embedding.sparse or embedding.max_norm is not None:
            yield None
            return
        embedding.sparse = True
        try:
            yield cls(embedding)
        finally:
            embedding.sparse = False


class CompactVocab:
    """The input token table trained as the rows the training split uses; the rest only decays, as AdamW would.

    A row no training text contains gets a zero gradient at every step, so AdamW's two moments for it
    stay zero and its whole update is the weight decay, p * (1 - lr * weight_decay). Here the table's
    parameter holds only the used rows (13,524 of MiniLM's 30,522 on rotten_tomatoes) while training,
    so the optimizer's moments, the gradient buffer and the AdamW pass cover those alone, and the other
    rows are multiplied by the same factor in one pass after each step (`decay`). On the CPU torch's fused
    AdamW rounds that factor to float32 before multiplying, as `mul_` does, so the weights end bit for bit
    where training the whole table puts them (tests/test_cpu_step.py); a kernel that rounds the decay
    another way would differ by that rounding, in rows no training text reads.

    Only the table's lookup sees compact row numbers: a pre-hook maps each token id to its row as the
    embedding is called, so the model's input_ids keep their meaning (RoBERTa's position ids and a
    decoder's last-token search compare them with the pad id). Evaluation, checkpoints and everything
    after `fit` see the whole table (`whole`).
    """

    def __init__(self, embedding: torch.nn.Embedding, used: torch.Tensor, group: dict):
        self.embedding, self.group = embedding, group  # group: the table's optimizer param group
        self.size, self.padding_idx = embedding.num_embeddings, embedding.padding_idx
        device = embedding.weight.device
        self.used = used.to(device)
        unused = torch.ones(self.size, dtype=torch.bool)
        unused[used] = False
        self.unused = unused.nonzero().squeeze(1).to(device)
        self.row_of = torch.full((self.size,), -1, dtype=torch.long)  # -1: an id no training text has (an index error if looked up)
        self.row_of[used] = torch.arange(len(used))
        self.row_of = self.row_of.to(device)
        with torch.no_grad():
            # `whole` writes the rows back into the table itself instead of allocating another: while training,
            # the table, the used rows and the unused rows (one more table in all) are what is held.
            self.table = embedding.weight.detach()
            self.rows = self.table.index_select(0, self.used)  # the parameter's storage while training
            self.rest = self.table.index_select(0, self.unused)
        self.hook = None
        self._compact()

    def _lookup(self, _module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (self.row_of[args[0]], *args[1:]), kwargs
        return args, {**kwargs, "input": self.row_of[kwargs["input"]]}

    def _compact(self) -> None:
        with torch.no_grad():
            self.embedding.weight.set_(self.rows)  # same Parameter object: the optimizer keeps holding it
        self.embedding.num_embeddings = len(self.used)
        if self.padding_idx is not None:
            self.embedding.padding_idx = int(self.row_of[self.padding_idx])
        self.hook = self.embedding.register_forward_pre_hook(self._lookup, with_kwargs=True)

    def _whole(self) -> None:
        self.hook.remove()
        self.table.index_copy_(0, self.used, self.rows)
        self.table.index_copy_(0, self.unused, self.rest)
        with torch.no_grad():
            self.embedding.weight.set_(self.table)
        self.embedding.num_embeddings, self.embedding.padding_idx = self.size, self.padding_idx

    @contextmanager
    def whole(self) -> Iterator[None]:
        """Within this block the model has its whole table (current values); the compact rows afterwards."""
        self._whole()
        try:
            yield
        finally:
            self._compact()

    def decay(self) -> None:
        """After optimizer.step(): the weight decay that step gave the unused rows. AdamW skips a parameter
        without a gradient (a group not yet unfrozen, whose rate is 0 then anyway), and so does this. (A step
        the fused AdamW skips on a GPU for a non-finite loss is decayed here all the same; the run then stops
        at the next read, before any checkpoint of it.)"""
        lr, weight_decay = self.group["lr"], self.group["weight_decay"]
        if self.embedding.weight.grad is not None and weight_decay:
            self.rest.mul_(1 - lr * weight_decay)

    @classmethod
    @contextmanager
    def of(cls, model, optimizer: torch.optim.Optimizer, train: Encoded, pad_id: int,
           enabled: bool) -> Iterator["CompactVocab | None"]:
        """Within this block the model's input embedding holds the rows `train` uses. Yields None where that does
        not apply: off, a table that is not a plain nn.Embedding, tied to an output layer, frozen, or all used."""
        embedding = model.get_input_embeddings() if enabled else None
        if type(embedding) is not torch.nn.Embedding or embedding.max_norm is not None or model.get_output_embeddings() is not None:
            yield None
            return
        weight = embedding.weight
        group = next((g for g in optimizer.param_groups if any(p is weight for p in g["params"])), None)
        ids = {i for row in train.input_ids for i in row} | {pad_id} | ({embedding.padding_idx} - {None})
        # Resumed, the optimizer holds moments already: for these rows when the checkpoint was written in this
        # block (resuming refuses other data or another train.compact_vocab), for the whole table when it was
        # written by a version without it, which then goes on with the whole table.
        moments = optimizer.state.get(weight, {}).get("exp_avg")
        if (group is None or len(ids) >= embedding.num_embeddings or max(ids) >= embedding.num_embeddings or min(ids) < 0
                or (moments is not None and moments.shape[0] != len(ids))):
            yield None  # out-of-range ids are left for the embedding's own error
            return
        vocab = cls(embedding, torch.tensor(sorted(ids)), group)
        try:
            yield vocab
        finally:
            weight.grad = None  # a step cut short by an error may leave a gradient of the compact size
            vocab._whole()
            vocab.rows = vocab.rest = None  # only the table from here on
