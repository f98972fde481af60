// Registration functions of the built-in metric components.
#pragma once

#include "groklab/registry.h"

namespace groklab::metrics {

// Adds `accuracy`, `loss` and `weight_norm`.
void register_evaluation(Registrar& r);

// Adds `attention_sparsity` and `attention_entropy`.
void register_attention(Registrar& r);

// Adds `feature_compressibility` and `fourier_sparsity`.
void register_spectral(Registrar& r);

// Adds `tree_structuredness` and `tparseval`.
void register_tree(Registrar& r);

// Adds `grad_norm` and `update_norm`.
void register_training(Registrar& r);

// Adds `heuristic_core` (heuristic_core.cpp).
void register_heuristic_core(Registrar& r);

// Adds `ntk_distance` (ntk.cpp).
void register_ntk(Registrar& r);

}  // namespace groklab::metrics
