"""The DAMSM text encoder of AttnGAN: word embedding -> bidirectional LSTM -> word and sentence features."""

import torch
import torch.nn as nn

__all__ = ["TextEncoder"]


class TextEncoder(nn.Module):
    """Bi-LSTM text encoder (AttnGAN's RNN_ENCODER).

    tokens [B, T] (0 = padding) -> e [B, D, T] word features (both directions concatenated, zero at
    padding) and e_bar [B, D] sentence feature (final hidden states of both directions), D = 2*hidden.
    Dropout is applied to the word embeddings, as in the original.

    Batch-size agnostic, so it runs under DistributedDataParallel on any rank's slice of the batch: the LSTM gets
    no initial state (the original's init_hidden(batch_size) is what broke under DataParallel's scatter) and the
    packed sequences need not be sorted (enforce_sorted=False; h_n comes back in the input order).
    """

    def __init__(self, vocab_size, embedding_dim=300, hidden=128, dropout=0.5):
        super().__init__()
        self.vocab_size, self.embedding_dim, self.hidden = int(vocab_size), int(embedding_dim), int(hidden)
        self.out_dim = 2 * self.hidden
        self.embedding = nn.Embedding(self.vocab_size, self.embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(self.embedding_dim, self.hidden, num_layers=1, batch_first=True, bidirectional=True)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # as the original's init_weights

    def forward(self, tokens, lengths):
        """tokens: [B, T] int64; lengths: [B] int (>= 1). Returns (e [B, D, T], e_bar [B, D])."""
        B, T = tokens.shape
        x = self.drop(self.embedding(tokens))  # [B, T, 300]
        lengths_cpu = torch.as_tensor(lengths).to("cpu", torch.int64).clamp(min=1, max=T)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)  # h_n [2, B, hidden]
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # [B, T, D]
        e = out.transpose(1, 2).contiguous()  # [B, D, T]
        e_bar = h_n.transpose(0, 1).reshape(B, self.out_dim)  # [B, D]  forward final | backward final
        return e, e_bar
