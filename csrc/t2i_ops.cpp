// Registers the t2i operator schemas with the PyTorch dispatcher; the CPU and CUDA kernels
// live in cpu_kernels.cpp and cuda_kernels.cu, fake kernels and autograd in t2icli/ops/.
#include <Python.h>
#include <torch/library.h>

// Lets `import t2icli._C` (setup.py build) load this library; the ops register on load.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "t2i C++/CUDA operators (torch.ops.t2i)", -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(t2i, m) {
  // h [B,C,N], e [B,C,T], mask [B,T] bool (True = padding) -> c [B,C,N], beta [B,T,N] (or [0])
  m.def("word_region_attention(Tensor h, Tensor e, Tensor mask, bool return_attn) -> (Tensor, Tensor)");
  // grad_c [B,C,N], grad_beta [B,T,N] or None -> grad_h [B,C,N], grad_e [B,C,T]
  m.def("word_region_attention_backward(Tensor grad_c, Tensor? grad_beta, Tensor h, Tensor e, Tensor mask) -> (Tensor, Tensor)");
  // img [M,D,N], words [M,D,T], lengths [M] int64 -> score [M,M] (rows images, columns captions)
  m.def("damsm_word_scores(Tensor img, Tensor words, Tensor lengths, float gamma1, float gamma2) -> Tensor");
  // grad [M,M] -> grad_img [M,D,N], grad_words [M,D,T]
  m.def("damsm_word_scores_backward(Tensor grad, Tensor img, Tensor words, Tensor lengths, float gamma1, float gamma2) -> (Tensor, Tensor)");
  // CPU only (training): -> score [M,M], saved [M,3,L,N] (each image's word-region scores S, word softmax P and region softmax A, L = sum(lengths))
  m.def("damsm_word_scores_save(Tensor img, Tensor words, Tensor lengths, float gamma1, float gamma2) -> (Tensor, Tensor)");
  // CPU only: the backward from saved instead of recomputing it
  m.def("damsm_word_scores_backward_saved(Tensor grad, Tensor img, Tensor words, Tensor lengths, Tensor saved, float gamma1, float gamma2) -> (Tensor, Tensor)");
}
