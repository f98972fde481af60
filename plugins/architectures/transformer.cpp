// transformer: a batch-first transformer over a fixed-length token sequence,
// with the variants of the grokking papers as parameters (issue 6).
//
// Parameter names, as Python's state_dict spells them:
//   embed.weight [V, d]                     token embeddings
//   pos [T, d]                              learned positions (a buffer when sinusoidal)
//   blocks.N.attn.{q,k,v,out}_proj.weight   [d, d]; .bias [d] with attn_bias
//   blocks.N.ln_attn.{weight,bias}          LN on attention inputs (pre, peri, attn-pre*, pre-v)
//                                           or after the attention residual (post)
//   blocks.N.ln_attn_out.{weight,bias}      LN on the attention output (peri)
//   blocks.N.ln_mlp.{weight,bias}           LN on the MLP input (pre, peri, mlp-pre, pre-v)
//                                           or after the MLP residual (post)
//   blocks.N.ln_mlp_out.{weight,bias}       LN on the MLP output (peri)
//   blocks.N.mlp.fc1.{weight,bias}          [d_ff, d], [d_ff]
//   blocks.N.mlp.fc2.{weight,bias}          [d, d_ff], [d]
//   ln_final.{weight,bias}                  with final_ln
//   readout [d, C]                          logits = α · h @ readout (absent with tied_readout)
//   init.*                                  with readout_center: buffers holding the initial
//                                           network θ₀ under the same names (init.readout, …)
//
// readout_center (Omnigrok / Kumar et al.'s centring): logits = α·(f(θ) − f(θ₀)),
// where f(θ₀) is a frozen copy of the network as initialised. θ₀ is stored as
// buffers, so it is in every checkpoint's state dict and a resume restores it
// bit for bit; building the copy draws no randomness, so the initial θ is the
// same with and without centring. The copy runs without autograd and without
// dropout, so with dropout 0 the output at initialisation is exactly zero.
//
// The forward pass issues the same ATen ops, on tensors of the same layout, as
// PyTorch 1.13's nn.MultiheadAttention (batch_first, slow path) and the model
// in grok_reference.py, and init = "reference" draws from torch's default
// generator in the order that model's constructor does, so the default
// experiment with last_block_at_readout = false is bit-identical to the
// Python peer (tests/test_builtin_peer.cpp). With readout = "last" and
// last_block_at_readout (the default) it computes the same function by a
// shorter route, equal up to float summation order: the last block runs at
// the last position only (Block::forward_last), its attention is one fused
// kernel (one_query_attention.h), and a one-block model whose batch has more
// than twice the vocabulary's rows computes the block's input side once per
// (token, position) pair (Block::forward_last_from_table).
#include <ATen/ScalarOps.h>

#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

#include "architectures.h"
#include "one_query_attention.h"
#include "groklab/components.h"

namespace groklab::architectures {
namespace {

using torch::Tensor;

// A 0-dim double tensor flagged as a wrapped number: what Python passes to an
// op for `tensor / 3.0`, so the op (and its autograd node) is the same as Python's.
Tensor py_scalar(double v) { return at::native::wrapped_scalar_tensor(v); }

// Initialisers, each mirroring torch.nn.init's Python code op for op.

// nn.Linear's default weight init: kaiming_uniform_(a=√5), fan_in = size(1).
void linear_default_weight(Tensor w) {
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1 + std::pow(a, 2)));
  const double std_ = gain / std::sqrt(static_cast<double>(w.size(1)));
  const double bound = std::sqrt(3.0) * std_;
  w.uniform_(-bound, bound);
}

// nn.Linear's default bias init: U(-1/√fan_in, 1/√fan_in).
void linear_default_bias(Tensor b, int64_t fan_in) {
  const double bound = 1 / std::sqrt(static_cast<double>(fan_in));
  b.uniform_(-bound, bound);
}

// nn.init.xavier_uniform_ with gain 1 (fan_in = size(1), fan_out = size(0)).
void xavier_uniform(Tensor w) {
  const double std_ = 1.0 * std::sqrt(2.0 / static_cast<double>(w.size(1) + w.size(0)));
  const double a = std::sqrt(3.0) * std_;
  w.uniform_(-a, a);
}

// nn.init.trunc_normal_: uniform_ → erfinv_ → mul_ → add_ → clamp_.
void trunc_normal(Tensor t, double mean, double std_, double a, double b) {
  auto norm_cdf = [](double x) { return (1. + std::erf(x / std::sqrt(2.))) / 2.; };
  const double l = norm_cdf((a - mean) / std_);
  const double u = norm_cdf((b - mean) / std_);
  t.uniform_(2 * l - 1, 2 * u - 1);
  t.erfinv_();
  t.mul_(std_ * std::sqrt(2.));
  t.add_(mean);
  t.clamp_(a, b);
}

// LeCun truncated normal: std 1/√fan_in (fan_in = size(1)), cut at ±2 std.
void lecun(Tensor w) {
  const double std_ = 1 / std::sqrt(static_cast<double>(w.size(1)));
  trunc_normal(w, 0.0, std_, -2 * std_, 2 * std_);
}

// Which LayerNorms a placement uses.
struct Placement {
  bool attn_q = false, attn_k = false, attn_v = false;  // attention inputs from LN(x)
  bool mlp_in = false;                                  // MLP input from LN(x)
  bool peri_out = false;                                // LN on each sublayer's output
  bool post = false;                                    // x = LN(x + f(x))
};

Placement parse_placement(const std::string& s) {
  Placement p;
  if (s == "off") return p;
  if (s == "pre") p.attn_q = p.attn_k = p.attn_v = p.mlp_in = true;
  else if (s == "post") p.post = true;
  else if (s == "peri") p.attn_q = p.attn_k = p.attn_v = p.mlp_in = p.peri_out = true;
  else if (s == "mlp-pre") p.mlp_in = true;
  else if (s == "attn-pre") p.attn_q = p.attn_k = p.attn_v = true;
  else if (s == "attn-pre-qk") p.attn_q = p.attn_k = true;
  else if (s == "attn-pre-v") p.attn_v = true;
  else if (s == "pre-v") p.attn_v = p.mlp_in = true;
  else throw std::invalid_argument("transformer: unknown layer_norm placement '" + s + "'");
  return p;
}

// Everything the model is built from.
struct Config {
  int64_t depth, d_model, heads, d_ff;
  std::string activation;
  double dropout;
  std::string positions, embed_scale, layer_norm;
  double ln_eps;
  bool attn_bias, causal;
  std::string readout;
  bool tied_readout, final_ln;
  std::string init;
  double readout_scale;
  bool readout_center;
  bool last_block_at_readout;  // readout = last: the last block only at the last position
  int64_t members = 0;  // > 0: an ensemble, every tensor stacked on a leading member dimension
};

// The shape of a tensor of one model, with the ensemble's member dimension
// in front when S > 0.
std::vector<int64_t> dims(int64_t S, std::initializer_list<int64_t> shape) {
  std::vector<int64_t> out;
  if (S > 0) out.push_back(S);
  out.insert(out.end(), shape.begin(), shape.end());
  return out;
}

// Registers t in m as a parameter, or as a buffer when frozen (the initial copy).
Tensor add_tensor(torch::nn::Module& m, const std::string& name, Tensor t, bool frozen) {
  return frozen ? m.register_buffer(name, std::move(t)) : m.register_parameter(name, std::move(t));
}

// y = x Wᵀ + b, as nn.Linear (parameters `weight` [out, in], `bias` [out]).
// Stacked (S members: [S, out, in], [S, out]): x's rows are member-major
// ([S·N, …, in]) and each member's rows meet its own weights in one bmm.
struct Linear : torch::nn::Module {
  Linear(int64_t in, int64_t out, bool with_bias, bool frozen, int64_t S) {
    weight = add_tensor(*this, "weight", torch::empty(dims(S, {out, in})), frozen);
    if (with_bias) bias = add_tensor(*this, "bias", torch::empty(dims(S, {out})), frozen);
  }
  Tensor forward(const Tensor& x) const { return apply(x, weight, bias); }
  // forward() with the given weight and bias (bias may be undefined).
  static Tensor apply(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    if (weight.dim() == 2) return at::linear(x, weight, bias);
    const int64_t S = weight.size(0);
    std::vector<int64_t> shape = x.sizes().vec();
    const Tensor x3 = x.reshape({S, -1, shape.back()});
    const Tensor wt = weight.transpose(1, 2);
    Tensor y = bias.defined() ? at::baddbmm(bias.unsqueeze(1), x3, wt) : at::bmm(x3, wt);
    shape.back() = weight.size(1);
    return y.view(shape);
  }
  Tensor weight, bias;
};

// nn.LayerNorm over the last dimension (parameters `weight`, `bias`).
// Stacked: weight and bias [S, d], x member-major.
struct LayerNorm : torch::nn::Module {
  LayerNorm(int64_t d, double eps, bool frozen, int64_t S) : d_(d), eps_(eps) {
    weight = add_tensor(*this, "weight", torch::ones(dims(S, {d})), frozen);
    bias = add_tensor(*this, "bias", torch::zeros(dims(S, {d})), frozen);
  }
  Tensor forward(const Tensor& x) const {
    if (weight.dim() == 1) return at::layer_norm(x, {d_}, weight, bias, eps_, /*cudnn_enable=*/true);
    // One fused LayerNorm per member: a separate affine step would round
    // differently from the single model's kernel (forward and backward), and
    // members are to train bit-identically to their single runs.
    // unbind, not select: its backward stacks the S gradients at once.
    const int64_t S = weight.size(0);
    const auto xs = x.reshape({S, -1, d_}).unbind(0), ws = weight.unbind(0), bs = bias.unbind(0);
    std::vector<Tensor> ys;
    ys.reserve(static_cast<size_t>(S));
    for (size_t s = 0; s < static_cast<size_t>(S); ++s)
      ys.push_back(at::layer_norm(xs[s], {d_}, ws[s], bs[s], eps_, /*cudnn_enable=*/true));
    return at::stack(ys).view(x.sizes());
  }
  Tensor weight, bias;

 private:
  int64_t d_;
  double eps_;
};

// Multi-head attention with separate q/k/v/out projections; the same ops as
// F.multi_head_attention_forward in PyTorch 1.13.
struct Attention : torch::nn::Module {
  Attention(int64_t d, int64_t heads, bool bias, bool frozen, int64_t S) : d_(d), heads_(heads) {
    q_proj = register_module("q_proj", std::make_shared<Linear>(d, d, bias, frozen, S));
    k_proj = register_module("k_proj", std::make_shared<Linear>(d, d, bias, frozen, S));
    v_proj = register_module("v_proj", std::make_shared<Linear>(d, d, bias, frozen, S));
    out_proj = register_module("out_proj", std::make_shared<Linear>(d, d, bias, frozen, S));
  }

  // forward() of an ensemble (stacked projections): inputs [S, B, T, d],
  // output [S, B, T_q, d]. Each member's rows are laid out as the
  // single model lays them out (position-major, [T·B, d], as
  // nn.MultiheadAttention's [T, B, d]), so every product and every weight
  // gradient sums in the same order and members train bit-identically to
  // their single runs.
  Tensor forward_stacked(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& mask) const {
    const int64_t S = q_in.size(0), B = q_in.size(1), hd = d_ / heads_;
    // [S, B, T, d] -> [S, T·B, d]
    auto position_major = [&](const Tensor& x) {
      return x.transpose(1, 2).reshape({S, x.size(2) * B, d_});
    };
    auto project = [&](const Tensor& x, const Tensor& w, const Tensor& b) {
      const Tensor wt = w.transpose(1, 2);
      return b.defined() ? at::baddbmm(b.unsqueeze(1), x, wt) : at::bmm(x, wt);
    };
    const int64_t tgt = q_in.size(2), src = k_in.size(2);
    Tensor q, k, v;  // [S, len, B, d]
    if (q_in.is_same(k_in) && k_in.is_same(v_in)) {
      // One packed projection for q, k and v.
      const Tensor w = at::cat({q_proj->weight, k_proj->weight, v_proj->weight}, 1);
      const Tensor b = q_proj->bias.defined() ? at::cat({q_proj->bias, k_proj->bias, v_proj->bias}, 1) : Tensor();
      auto qkv = project(position_major(q_in), w, b).view({S, tgt, B, 3 * d_}).chunk(3, -1);
      q = qkv[0];
      k = qkv[1];
      v = qkv[2];
    } else {
      q = project(position_major(q_in), q_proj->weight, q_proj->bias).view({S, tgt, B, d_});
      k = project(position_major(k_in), k_proj->weight, k_proj->bias).view({S, src, B, d_});
      v = project(position_major(v_in), v_proj->weight, v_proj->bias).view({S, src, B, d_});
    }
    // [S, len, B, d] -> [S·B·heads, len, hd]
    auto split = [&](const Tensor& t, int64_t len) {
      return t.reshape({S, len, B * heads_, hd}).transpose(1, 2).reshape({S * B * heads_, len, hd});
    };
    const Tensor q_scaled = at::div(split(q, tgt), py_scalar(std::sqrt(static_cast<double>(hd))));
    const Tensor kt = split(k, src).transpose(-2, -1);
    Tensor att = mask.defined() ? at::baddbmm(mask.dim() == 2 ? mask.unsqueeze(0) : mask, q_scaled, kt)
                                : at::bmm(q_scaled, kt);
    att = att.softmax(-1);
    Tensor out = at::bmm(att, split(v, src));
    out = out.view({S, B * heads_, tgt, hd}).transpose(1, 2).reshape({S, tgt * B, d_});
    out = project(out, out_proj->weight, out_proj->bias);
    return out.view({S, tgt, B, d_}).transpose(1, 2);
  }

  // The keys and values of k_in and v_in [..., d] packed as [..., 2d]: one
  // projection when they come from the same tensor.
  Tensor project_kv(const Tensor& k_in, const Tensor& v_in) const {
    if (!k_in.is_same(v_in)) return at::cat({k_proj->forward(k_in), v_proj->forward(v_in)}, -1);
    const Tensor& wk = k_proj->weight;
    const Tensor w = at::cat({wk, v_proj->weight}, wk.dim() - 2);  // output features
    const Tensor b = k_proj->bias.defined() ? at::cat({k_proj->bias, v_proj->bias}, -1) : Tensor();
    return Linear::apply(k_in, w, b);
  }

  // Attention of one query position over every key, batch-first, for the
  // last block at the read-out position: the projected query q [B, d] and
  // the packed keys and values kv [B, T, 2d] (project_kv()); for an ensemble
  // a leading member dimension S on both. With rows ([B, T], an ensemble's
  // [S·B, T] offset per member), kv is instead a table [R, 2d] ([S, R, 2d])
  // and rows pick each example's keys and values from it. mask_row: the
  // query's row of the additive mask, [1, T], or undefined. Returns [B, d]
  // ([S, B, d]). The scores, softmax and weighted sum are one fused kernel
  // (one_query_attention.h) over every row, members included, so an
  // ensemble member computes exactly what its single run does.
  Tensor attend_one_query(const Tensor& q, const Tensor& kv, const Tensor& rows, const Tensor& mask_row,
                          double dropout, bool training) const {
    const int64_t hd = d_ / heads_, T = rows.defined() ? rows.size(1) : kv.size(-2);
    const Tensor packed = rows.defined() ? kv.reshape({-1, 2 * d_}) : kv.reshape({-1, T, 2 * d_});
    const Tensor out = one_query_attention(q.reshape({-1, d_}), packed, rows,
                                           mask_row.defined() ? mask_row.view({T}) : mask_row, heads_,
                                           1 / std::sqrt(static_cast<double>(hd)), training ? dropout : 0.0);
    return out_proj->forward(out.view(q.sizes()));
  }

  // q_in, k_in, v_in: [B, T, d]; mask: [T, T] or [B·heads, T, T] additive, or
  // undefined. hooks (or nullptr) records and gates layer `layer`'s heads.
  Tensor forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& mask,
                 double dropout, bool training, ForwardHooks* hooks = nullptr,
                 int64_t layer = 0) const {
    Tensor q, k, v;
    if (q_in.is_same(k_in) && k_in.is_same(v_in)) {
      // Self-attention: one packed projection, as nn.MultiheadAttention's in_proj_weight.
      const Tensor x = q_in.transpose(1, 0);
      Tensor w = at::cat({q_proj->weight, k_proj->weight, v_proj->weight});
      Tensor b;
      if (q_proj->bias.defined()) b = at::cat({q_proj->bias, k_proj->bias, v_proj->bias});
      auto qkv = at::linear(x, w, b).chunk(3, -1);
      q = qkv[0];
      k = qkv[1];
      v = qkv[2];
    } else {
      q = q_proj->forward(q_in.transpose(1, 0));
      k = k_proj->forward(k_in.transpose(1, 0));
      v = v_proj->forward(v_in.transpose(1, 0));
    }
    const int64_t tgt = q.size(0), bsz = q.size(1), hd = d_ / heads_;
    q = q.contiguous().view({tgt, bsz * heads_, hd}).transpose(0, 1);
    k = k.contiguous().view({k.size(0), bsz * heads_, hd}).transpose(0, 1);
    v = v.contiguous().view({v.size(0), bsz * heads_, hd}).transpose(0, 1);
    const Tensor q_scaled = at::div(q, py_scalar(std::sqrt(static_cast<double>(hd))));
    Tensor att = mask.defined() ? at::baddbmm(mask.dim() == 2 ? mask.unsqueeze(0) : mask, q_scaled,
                                              k.transpose(-2, -1))
                                : at::bmm(q_scaled, k.transpose(-2, -1));
    att = att.softmax(-1);
    if (hooks && hooks->record_attention)
      hooks->attention.push_back(att.view({bsz, heads_, tgt, att.size(-1)}));
    if (dropout > 0.0 && training) att = at::dropout(att, dropout, true);
    Tensor out = at::bmm(att, v);
    if (hooks && (hooks->record_heads || hooks->head_gate.defined())) {
      Tensor z = out.view({bsz, heads_, tgt, hd});
      if (hooks->record_heads) hooks->heads.push_back(z);
      if (hooks->head_gate.defined()) {
        const Tensor g = hooks->head_gate[layer].to(z.scalar_type()).view({1, heads_, 1, 1});
        z = z * g;
        if (hooks->head_fill.defined()) {
          const Tensor fill = hooks->head_fill.dim() == 4 ? hooks->head_fill[layer] : hooks->head_fill;
          z = z + fill.to(z.scalar_type()) * (1 - g);
        }
        out = z.reshape({bsz * heads_, tgt, hd});
      }
    }
    out = out.transpose(0, 1).contiguous().view({tgt * bsz, d_});
    out = out_proj->forward(out);
    return out.view({tgt, bsz, out.size(1)}).transpose(1, 0);
  }

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;

 private:
  int64_t d_, heads_;
};

// fc2(act(fc1(x))), dropout on the hidden layer.
struct Mlp : torch::nn::Module {
  Mlp(int64_t d, int64_t d_ff, bool gelu, bool frozen, int64_t S) : gelu_(gelu) {
    fc1 = register_module("fc1", std::make_shared<Linear>(d, d_ff, true, frozen, S));
    fc2 = register_module("fc2", std::make_shared<Linear>(d_ff, d, true, frozen, S));
  }
  Tensor forward(const Tensor& x, double dropout, bool training) const {
    Tensor h = fc1->forward(x);
    // threshold(h, 0, 0) is relu (the same values, the same backward,
    // threshold_backward on h > 0) but vectorised in this LibTorch, where
    // relu's clamp_min is not: 0.4 ms against 2.5 ms on [3830, 512].
    h = gelu_ ? at::gelu(h) : at::threshold(h, 0, 0);
    if (dropout > 0.0 && training) h = at::dropout(h, dropout, true);
    return fc2->forward(h);
  }
  std::shared_ptr<Linear> fc1, fc2;

 private:
  bool gelu_;
};

// One residual block: attention then MLP, LayerNorms where the placement says.
struct Block : torch::nn::Module {
  Block(const Config& c, const Placement& p, bool frozen)
      : p_(p), dropout_(c.dropout), stacked_(c.members > 0) {
    const int64_t S = c.members;
    auto ln = [&] { return std::make_shared<LayerNorm>(c.d_model, c.ln_eps, frozen, S); };
    attn = register_module("attn", std::make_shared<Attention>(c.d_model, c.heads, c.attn_bias, frozen, S));
    if (p.attn_q || p.attn_k || p.attn_v || p.post) ln_attn = register_module("ln_attn", ln());
    if (p.peri_out) ln_attn_out = register_module("ln_attn_out", ln());
    if (p.mlp_in || p.post) ln_mlp = register_module("ln_mlp", ln());
    mlp = register_module("mlp",
                          std::make_shared<Mlp>(c.d_model, c.d_ff, c.activation == "gelu", frozen, S));
    if (p.peri_out) ln_mlp_out = register_module("ln_mlp_out", ln());
  }

  // hooks (or nullptr) applies to this block, layer number `layer`.
  Tensor forward(Tensor x, const Tensor& mask, bool training, ForwardHooks* hooks = nullptr,
                 int64_t layer = 0) const {
    auto drop = [&](const Tensor& t) {
      return dropout_ > 0.0 && training ? at::dropout(t, dropout_, true) : t;
    };
    if (p_.post) {
      x = ln_attn->forward(x + drop(attend(x, x, x, mask, training, hooks, layer)));
      return ln_mlp->forward(x + drop(mlp->forward(x, dropout_, training)));
    }
    const Tensor xn = ln_attn ? ln_attn->forward(x) : Tensor();
    Tensor a = attend(p_.attn_q ? xn : x, p_.attn_k ? xn : x, p_.attn_v ? xn : x, mask, training, hooks, layer);
    if (ln_attn_out) a = ln_attn_out->forward(a);
    x = x + drop(a);
    Tensor m = mlp->forward(ln_mlp ? ln_mlp->forward(x) : x, dropout_, training);
    if (ln_mlp_out) m = ln_mlp_out->forward(m);
    return x + drop(m);
  }

  // forward() at the last position only, [B, T, d] -> [B, 1, d] (an
  // ensemble's: [S, B, T, d] -> [S, B, 1, d]): what a
  // readout from the last position needs of the last block. Keys and values
  // still come from every position; queries, the output projection, the MLP
  // and the LayerNorms after attention run on one position instead of T.
  // mask_row: the last row of the additive mask ([1, T]), or undefined.
  Tensor forward_last(const Tensor& x, const Tensor& mask_row, bool training) const {
    const int64_t T = x.size(-2);
    const Tensor x_last = x.select(-2, T - 1);
    const Tensor xn = ln_attn && !p_.post ? ln_attn->forward(x) : Tensor();
    auto in = [&](bool normed) { return normed ? xn : x; };
    const Tensor q = attn->q_proj->forward(p_.attn_q ? xn.select(-2, T - 1) : x_last);
    const Tensor kv = attn->project_kv(in(p_.attn_k), in(p_.attn_v));
    return finish_last(x_last, attn->attend_one_query(q, kv, Tensor(), mask_row, dropout_, training), training);
  }

  // forward_last() of a first block whose input rows are token embedding +
  // position, from a table of every (token, position) pair instead of every
  // example's rows: x_table [V·T, d] ([S, V·T, d]) holds row v·T + t for
  // token v at position t, idx [B, T] (member s's rows offset by s·V·T) picks
  // each example's rows. Everything before attention mixes positions is a
  // function of the row alone (LayerNorm, the q/k/v projections), so it runs
  // on the V·T table rows and is gathered after: the same values as
  // forward_last() on the gathered rows, summed in another order.
  Tensor forward_last_from_table(const Tensor& x_table, const Tensor& idx, const Tensor& mask_row,
                                 bool training) const {
    const int64_t T = idx.size(1);
    const Tensor xn = ln_attn && !p_.post ? ln_attn->forward(x_table) : Tensor();
    auto in = [&](bool normed) { return normed ? xn : x_table; };
    const Tensor last = idx.select(1, T - 1);
    const Tensor q = gather(attn->q_proj->forward(in(p_.attn_q)), last);
    const Tensor kv = attn->project_kv(in(p_.attn_k), in(p_.attn_v));  // [V·T, 2d]: read through idx
    return finish_last(gather(x_table, last), attn->attend_one_query(q, kv, idx, mask_row, dropout_, training),
                       training);
  }

  std::shared_ptr<Attention> attn;
  std::shared_ptr<LayerNorm> ln_attn, ln_attn_out, ln_mlp, ln_mlp_out;
  std::shared_ptr<Mlp> mlp;

 private:
  // The attention sublayer; an ensemble's runs stacked (no dropout, no hooks).
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool training,
                ForwardHooks* hooks = nullptr, int64_t layer = 0) const {
    if (stacked_) return attn->forward_stacked(q, k, v, mask);
    return attn->forward(q, k, v, mask, dropout_, training, hooks, layer);
  }
  // The rest of forward_last() once the attention output a [B, d] ([S, B, d])
  // of the last position x_last [B, d] is known; returns [B, 1, d].
  Tensor finish_last(const Tensor& x_last, Tensor a, bool training) const {
    auto drop = [&](const Tensor& t) {
      return dropout_ > 0.0 && training ? at::dropout(t, dropout_, true) : t;
    };
    Tensor xl = x_last.unsqueeze(-2);
    a = a.unsqueeze(-2);
    if (p_.post) {
      xl = ln_attn->forward(xl + drop(a));
      return ln_mlp->forward(xl + drop(mlp->forward(xl, dropout_, training)));
    }
    if (ln_attn_out) a = ln_attn_out->forward(a);
    xl = xl + drop(a);
    Tensor m = mlp->forward(ln_mlp ? ln_mlp->forward(xl) : xl, dropout_, training);
    if (ln_mlp_out) m = ln_mlp_out->forward(m);
    return xl + drop(m);
  }

  // Rows idx ([B, T] or [B]) of table [N, X], as [B, T, X] ([B, X]); an
  // ensemble's table [S, N, X] with member s's indices offset by s·N gives
  // [S, B, T, X] ([S, B, X]).
  static Tensor gather(const Tensor& table, const Tensor& idx) {
    if (table.dim() == 2) return at::embedding(table, idx, -1, false, false);
    const int64_t S = table.size(0);
    const Tensor rows = at::embedding(table.reshape({-1, table.size(-1)}), idx, -1, false, false);
    std::vector<int64_t> shape{S, idx.size(0) / S};
    for (int64_t i = 1; i < rows.dim(); ++i) shape.push_back(rows.size(i));
    return rows.view(shape);
  }

  Placement p_;
  double dropout_;
  bool stacked_;  // an ensemble's block: tensors stacked on a member dimension
};

// The network: embeddings (+ positions), blocks, optional final LN, readout.
// Its tensors are registered in `owner`: as parameters, or as buffers when
// frozen (the initial copy kept by readout_center).
class Net {
 public:
  Net(torch::nn::Module& owner, const Config& c, const TaskSpec& spec, bool frozen)
      : c_(c), spec_(spec) {
    const Placement placement = parse_placement(c.layer_norm);
    const int64_t d = c.d_model, S = c.members;
    auto embed = owner.register_module("embed", std::make_shared<torch::nn::Module>());
    embed_weight_ = add_tensor(*embed, "weight", torch::empty(dims(S, {spec.vocab_size, d})), frozen);
    if (c.positions == "learned") {
      pos_ = add_tensor(owner, "pos", torch::empty(dims(S, {spec.seq_len, d})), frozen);
    } else {
      // Fixed sinusoids (a buffer): pe[t, 2i] = sin(t·ω_i), pe[t, 2i+1] = cos(t·ω_i),
      // ω_i = 10000^(-2i/d).
      auto t = torch::arange(spec.seq_len, torch::kFloat).unsqueeze(1);
      auto omega = torch::exp(torch::arange(0, d, 2, torch::kFloat) *
                              (-std::log(10000.0) / static_cast<double>(d)));
      auto table = torch::zeros({spec.seq_len, d});
      table.slice(1, 0, d, 2).copy_(torch::sin(t * omega));
      table.slice(1, 1, d, 2).copy_(torch::cos(t * omega));
      pos_ = owner.register_buffer("pos", S > 0 ? table.expand(dims(S, {spec.seq_len, d})).clone() : table);
    }
    auto blocks = owner.register_module("blocks", std::make_shared<torch::nn::Module>());
    for (int64_t i = 0; i < c.depth; ++i)
      blocks_.push_back(blocks->register_module(std::to_string(i),
                                                std::make_shared<Block>(c, placement, frozen)));
    if (c.final_ln)
      ln_final_ = owner.register_module("ln_final", std::make_shared<LayerNorm>(d, c.ln_eps, frozen, S));
    if (!c.tied_readout)
      readout_ = add_tensor(owner, "readout", torch::empty(dims(S, {d, spec.num_classes})), frozen);
  }
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;

  // Returns h @ W_U (before α) for inputs [B, T], T <= seq_len; dropout only
  // when training; hooks (or nullptr) as ForwardHooks documents.
  // Where its parameters live.
  torch::Device device() const { return embed_weight_.device(); }

  // An ensemble's (members S > 0) inputs are the members' batches stacked
  // member-major, [S·B, T]; it offers no hooks and no dropout.
  Tensor forward(const Tensor& inputs, bool training, ForwardHooks* hooks = nullptr) const {
    const int64_t T = inputs.size(1), S = c_.members;
    if (S > 0 && hooks != nullptr) throw std::logic_error("transformer: an ensemble offers no forward hooks");
    if (S > 0 && inputs.size(0) % S != 0)
      throw std::invalid_argument("transformer: an ensemble of " + std::to_string(S) + " members got " +
                                  std::to_string(inputs.size(0)) + " rows, not a multiple of " + std::to_string(S));
    const int64_t B = S > 0 ? inputs.size(0) / S : inputs.size(0), d = c_.d_model;
    const bool last_only = hooks == nullptr && c_.readout == "last" && c_.last_block_at_readout && !blocks_.empty();
    Tensor mask = c_.causal ? causal_mask(T) : Tensor();
    if (last_only && blocks_.size() == 1 && !(c_.dropout > 0.0 && training) && 2 * embed_weight_.size(-2) < B)
      return readout(blocks_[0]->forward_last_from_table(token_position_table(T), table_rows(inputs),
                                                         mask.defined() ? mask.narrow(0, T - 1, 1) : mask,
                                                         training),
                     B);
    Tensor h;
    if (S > 0) {
      // Member s's tokens index rows s·V … s·V + V − 1 of the stacked tables.
      const int64_t V = embed_weight_.size(1);
      const Tensor offsets = (torch::arange(S, inputs.options()) * V).repeat_interleave(B).unsqueeze(1);
      h = at::embedding(embed_weight_.view({S * V, d}), inputs + offsets, -1, false, false);
    } else {
      h = at::embedding(embed_weight_, inputs, -1, false, false);
    }
    if (c_.embed_scale == "sqrt_d")
      h = at::mul(h, py_scalar(std::sqrt(static_cast<double>(c_.d_model))));
    if (S > 0) {
      // Per member, so the gradient of its positions sums over its batch as
      // the single model's does (one broadcast add would reduce in another order).
      const auto h4 = h.view({S, B, T, d}).unbind(0);
      const auto ps = pos_.unbind(0);
      std::vector<Tensor> hs;
      hs.reserve(static_cast<size_t>(S));
      for (size_t s = 0; s < static_cast<size_t>(S); ++s)
        hs.push_back(h4[s] + (T == spec_.seq_len ? ps[s] : ps[s].narrow(0, 0, T)));
      h = at::stack(hs);  // [S, B, T, d] through the blocks
    } else {
      h = h + (T == spec_.seq_len ? pos_ : pos_.narrow(0, 0, T));
    }
    if (c_.dropout > 0.0 && training) h = at::dropout(h, c_.dropout, true);
    if (last_only) {
      // Only the last position is read out: the last block runs there alone.
      for (size_t l = 0; l + 1 < blocks_.size(); ++l) h = blocks_[l]->forward(h, mask, training);
      h = blocks_.back()->forward_last(h, mask.defined() ? mask.narrow(0, T - 1, 1) : mask, training);
    } else if (hooks == nullptr) {
      for (const auto& b : blocks_) h = b->forward(h, mask, training);
    } else {
      if (hooks->attend.defined()) mask = hooked_mask(hooks->attend, mask, inputs.size(0), T, h.options());
      if (hooks->head_gate.defined() &&
          (hooks->head_gate.dim() != 2 || hooks->head_gate.size(0) != c_.depth ||
           hooks->head_gate.size(1) != c_.heads))
        throw std::invalid_argument("transformer: head_gate must be [" + std::to_string(c_.depth) + ", " +
                                    std::to_string(c_.heads) + "], got " + c10::str(hooks->head_gate.sizes()));
      if (hooks->record_hidden) hooks->hidden.push_back(h);
      for (size_t l = 0; l < blocks_.size(); ++l) {
        h = blocks_[l]->forward(h, mask, training, hooks, static_cast<int64_t>(l));
        if (hooks->record_hidden) hooks->hidden.push_back(h);
      }
    }
    return readout(h, B);
  }

  // The additive causal mask [T, T] (−∞ above the diagonal) in the
  // parameters' dtype and device; made once per length and kept.
  const Tensor& causal_mask(int64_t T) const {
    const Tensor& like = embed_weight_;
    if (!mask_.defined() || mask_.size(0) != T || mask_.scalar_type() != like.scalar_type() ||
        mask_.device() != like.device())
      mask_ = torch::full({T, T}, -std::numeric_limits<double>::infinity(), like.options()).triu(1);
    return mask_;
  }

  // The logits of the last block's output h [B, T, d] ([S, B, T, d]) read
  // out at the last position or at all.
  Tensor readout(Tensor h, int64_t B) const {
    const int64_t S = c_.members, T = h.size(-2), d = c_.d_model;
    if (S > 0) {
      // Each member's rows meet its own readout in one bmm.
      const Tensor w = c_.tied_readout ? embed_weight_.transpose(1, 2) : readout_;
      Tensor last = c_.readout == "last" ? h.select(-2, -1) : h;
      if (ln_final_) last = ln_final_->forward(last);
      const int64_t L = c_.readout == "last" ? 1 : T;
      return at::bmm(last.reshape({S, B * L, d}), w).view({S * B, L, w.size(2)});
    }
    const Tensor w = c_.tied_readout ? embed_weight_.t() : readout_;
    if (c_.readout == "last") {
      Tensor last = h.select(1, -1);
      if (ln_final_) last = ln_final_->forward(last);
      return last.matmul(w).unsqueeze(1);
    }
    if (ln_final_) h = ln_final_->forward(h);
    return h.matmul(w);
  }

  // The first block's input rows for every (token, position) pair: row
  // v·T + t is token v's embedding (scaled as forward() scales it) plus
  // position t; [V·T, d], an ensemble's [S, V·T, d]. The same elementwise
  // ops as forward(), so a row equals the row forward() builds.
  Tensor token_position_table(int64_t T) const {
    Tensor e = embed_weight_;
    if (c_.embed_scale == "sqrt_d") e = at::mul(e, py_scalar(std::sqrt(static_cast<double>(c_.d_model))));
    const Tensor p = T == spec_.seq_len ? pos_ : pos_.narrow(-2, 0, T);
    const int64_t V = e.size(-2), d = c_.d_model;
    const Tensor table = e.unsqueeze(-2) + p.unsqueeze(-3);  // [..., V, T, d]
    return c_.members > 0 ? table.view({c_.members, V * T, d}) : table.view({V * T, d});
  }

  // Each example's rows of token_position_table(): [B, T] (an ensemble's
  // [S·B, T], member s's offset by s·V·T).
  Tensor table_rows(const Tensor& inputs) const {
    const int64_t T = inputs.size(1), V = embed_weight_.size(-2), S = c_.members;
    Tensor rows = inputs * T + torch::arange(T, inputs.options());
    if (S > 0)
      rows = rows + (torch::arange(S, inputs.options()) * (V * T)).repeat_interleave(inputs.size(0) / S).unsqueeze(1);
    return rows;
  }

  // The additive [B·heads, T, T] mask of ForwardHooks::attend ([B, T] keys or
  // [B, T, T] query × key, true = may attend) on top of the model's own.
  Tensor hooked_mask(const Tensor& attend, const Tensor& own, int64_t B, int64_t T,
                     const torch::TensorOptions& opts) const {
    const bool keys = attend.dim() == 2 && attend.size(0) == B && attend.size(1) == T;
    const bool pairs = attend.dim() == 3 && attend.size(0) == B && attend.size(1) == T && attend.size(2) == T;
    if (attend.scalar_type() != torch::kBool || !(keys || pairs))
      throw std::invalid_argument("transformer: ForwardHooks::attend must be bool [" + std::to_string(B) + ", " +
                                  std::to_string(T) + "] or [B, T, T], got " +
                                  std::string(c10::toString(attend.scalar_type())) + " " +
                                  c10::str(attend.sizes()));
    Tensor allowed = keys ? attend.unsqueeze(1).expand({B, T, T}) : attend;
    Tensor m = torch::zeros({B, T, T}, opts).masked_fill(allowed.logical_not(),
                                                         -std::numeric_limits<double>::infinity());
    if (own.defined()) m = m + own;
    return m.unsqueeze(1).expand({B, c_.heads, T, T}).reshape({B * c_.heads, T, T});
  }

  // Fills every parameter from torch's default generator, in the order the
  // equivalent Python modules' constructors would draw.
  void initialise() {
    torch::NoGradGuard no_grad;
    const int64_t d = c_.d_model;
    const double inv_sqrt_d = std::pow(1.0 / static_cast<double>(d), 0.5);
    const std::string& s = c_.init;
    // Token embeddings.
    if (s == "reference") {
      embed_weight_.normal_(0, 1);  // nn.Embedding's own init, then the override
      embed_weight_.normal_(0, inv_sqrt_d);
    } else if (s == "pytorch") {
      embed_weight_.normal_(0, 1);
    } else if (s == "xavier") {
      xavier_uniform(embed_weight_);
    } else if (s == "lecun") {
      trunc_normal(embed_weight_, 0.0, inv_sqrt_d, -2 * inv_sqrt_d, 2 * inv_sqrt_d);
    } else {  // nanda
      embed_weight_.normal_(0, inv_sqrt_d);
    }
    // Positions: N(0, 0.02²) (Nanda: N(0, 1/d)).
    if (c_.positions == "learned") {
      if (s == "nanda") pos_.copy_(torch::randn(pos_.sizes()) * inv_sqrt_d);
      else pos_.copy_(torch::randn(pos_.sizes()) * 0.02);
    }
    for (const auto& b : blocks_) init_block(*b);
    if (readout_.defined()) {
      const int64_t C = readout_.size(1);
      if (s == "reference") {
        readout_.copy_(torch::randn({d, C}) * inv_sqrt_d);
      } else if (s == "pytorch") {
        // As nn.Linear(d, C, bias=False): weight [C, d], stored transposed.
        Tensor w = torch::empty({C, d});
        linear_default_weight(w);
        readout_.copy_(w.t());
      } else if (s == "xavier") {
        xavier_uniform(readout_);  // symmetric in fan_in/fan_out
      } else if (s == "lecun") {
        trunc_normal(readout_, 0.0, inv_sqrt_d, -2 * inv_sqrt_d, 2 * inv_sqrt_d);
      } else {  // nanda: W_U ~ N(0, 1/C)
        readout_.copy_(torch::randn({d, C}) / std::sqrt(static_cast<double>(C)));
      }
    }
  }

 private:
  void init_block(Block& b) {
    const std::string& s = c_.init;
    const int64_t d = c_.d_model;
    Attention& a = *b.attn;
    Linear& fc1 = *b.mlp->fc1;
    Linear& fc2 = *b.mlp->fc2;
    auto zero_biases = [](std::initializer_list<Linear*> ls) {
      for (Linear* l : ls)
        if (l->bias.defined()) l->bias.zero_();
    };
    if (s == "reference" || s == "pytorch") {
      // nn.MultiheadAttention(d, heads, bias): out_proj = nn.Linear(d, d, bias),
      // then xavier_uniform_ on the packed [3d, d] in_proj_weight, biases zero.
      linear_default_weight(a.out_proj->weight);
      if (a.out_proj->bias.defined()) linear_default_bias(a.out_proj->bias, d);
      Tensor in_proj = torch::empty({3 * d, d});
      xavier_uniform(in_proj);
      a.q_proj->weight.copy_(in_proj.narrow(0, 0, d));
      a.k_proj->weight.copy_(in_proj.narrow(0, d, d));
      a.v_proj->weight.copy_(in_proj.narrow(0, 2 * d, d));
      zero_biases({a.q_proj.get(), a.k_proj.get(), a.v_proj.get(), a.out_proj.get()});
      // nn.Linear(d, d_ff), nn.Linear(d_ff, d).
      for (Linear* l : {&fc1, &fc2}) {
        linear_default_weight(l->weight);
        linear_default_bias(l->bias, l->weight.size(1));
      }
      if (s == "reference") {
        for (Linear* l : {a.out_proj.get(), &fc1, &fc2}) lecun(l->weight);
        zero_biases({&fc1, &fc2});
      }
      return;
    }
    for (Linear* l : {a.q_proj.get(), a.k_proj.get(), a.v_proj.get(), a.out_proj.get(), &fc1, &fc2}) {
      if (s == "xavier") xavier_uniform(l->weight);
      else if (s == "lecun") lecun(l->weight);
      else l->weight.copy_(torch::randn(l->weight.sizes()) * std::pow(1.0 / static_cast<double>(d), 0.5));
    }
    zero_biases({a.q_proj.get(), a.k_proj.get(), a.v_proj.get(), a.out_proj.get(), &fc1, &fc2});
  }

  Config c_;
  TaskSpec spec_;
  Tensor embed_weight_, pos_, readout_;
  mutable Tensor mask_;  // causal_mask()'s
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<LayerNorm> ln_final_;
};

// The model: the network, scaled by α and, with readout_center, centred on
// its initial copy.
class Transformer final : public Model {
 public:
  // An ensemble (c.members > 0) draws nothing: its tensors come from its members (bind_members).
  Transformer(const Config& c, const TaskSpec& spec) : c_(c), spec_(spec), net_(*this, c, spec, false) {
    if (c.members == 0) net_.initialise();
    if (c.readout_center) {
      auto holder = register_module("init", std::make_shared<torch::nn::Module>());
      init_ = std::make_unique<Net>(*holder, c, spec, true);
      // θ₀ ← θ by name; draws nothing.
      torch::NoGradGuard no_grad;
      auto params = named_parameters(true);
      auto buffers = named_buffers(true);
      for (auto& b : holder->named_buffers(true)) {
        const torch::Tensor* from = params.find(b.key());
        if (from == nullptr) from = buffers.find(b.key());
        if (from == nullptr) throw std::logic_error("transformer: no tensor '" + b.key() + "' to copy");
        b.value().copy_(*from);
      }
    }
  }

  Tensor forward(const Tensor& inputs) override { return run(inputs, nullptr); }

  ModelInternals internals() const override {
    if (c_.members > 0) return {};  // an ensemble offers no hooks; its members do
    return {c_.depth, c_.heads, c_.d_model, c_.d_model / c_.heads};
  }

  // The hooks apply to the trained network, not to the frozen initial copy
  // of readout_center.
  Tensor forward_hooked(const Tensor& inputs, ForwardHooks& hooks) override { return run(inputs, &hooks); }

 private:
  Tensor run(const Tensor& inputs, ForwardHooks* hooks) {
    const int64_t T = inputs.size(1);
    if (T > spec_.seq_len)
      throw std::invalid_argument("transformer: input length " + std::to_string(T) +
                                  " exceeds the task's seq_len " + std::to_string(spec_.seq_len));
    // Inputs may come from the task on the CPU (metrics) while the model
    // lives on a GPU: everything a caller gets back is on the inputs' device.
    const torch::Device home = inputs.device(), dev = net_.device();
    if (home != dev) return across_devices(inputs, hooks, home, dev);
    Tensor logits = net_.forward(inputs, is_training(), hooks);
    if (init_) {
      Tensor at_init;
      {
        torch::NoGradGuard no_grad;
        at_init = init_->forward(inputs, false);
      }
      logits = logits - at_init;
    }
    if (c_.readout_scale != 1.0) logits = at::mul(logits, py_scalar(c_.readout_scale));
    return logits;
  }

  // run() for inputs on another device than the model: moves the inputs and
  // the hooks' in-tensors to the model, and the logits and recorded tensors back.
  Tensor across_devices(const Tensor& inputs, ForwardHooks* hooks, torch::Device home, torch::Device dev) {
    auto to = [](const Tensor& t, torch::Device d) { return t.defined() ? t.to(d) : t; };
    if (hooks == nullptr) return run(inputs.to(dev), nullptr).to(home);
    ForwardHooks there = *hooks;
    there.attend = to(hooks->attend, dev);
    there.head_gate = to(hooks->head_gate, dev);
    there.head_fill = to(hooks->head_fill, dev);
    Tensor logits = run(inputs.to(dev), &there).to(home);
    for (auto [out, from] : {std::pair(&hooks->hidden, &there.hidden), std::pair(&hooks->attention, &there.attention),
                             std::pair(&hooks->heads, &there.heads)}) {
      out->clear();
      for (const Tensor& t : *from) out->push_back(t.to(home));
    }
    return logits;
  }

  Config c_;
  TaskSpec spec_;
  Net net_;
  std::unique_ptr<Net> init_;  // the frozen initial copy (readout_center)
};

class TransformerArchitecture final : public Architecture {
 public:
  explicit TransformerArchitecture(const Params& p) {
    c_.depth = p.get_int("depth");
    c_.d_model = p.get_int("d_model");
    c_.heads = p.get_int("heads");
    c_.d_ff = p.get_int("d_ff");
    c_.activation = p.get_string("activation");
    c_.dropout = p.get_float("dropout");
    c_.positions = p.get_string("positions");
    c_.embed_scale = p.get_string("embed_scale");
    c_.layer_norm = p.get_string("layer_norm");
    c_.ln_eps = p.get_float("ln_eps");
    c_.attn_bias = p.get_bool("attn_bias");
    c_.causal = p.get_bool("causal");
    c_.readout = p.get_string("readout");
    c_.tied_readout = p.get_bool("tied_readout");
    c_.final_ln = p.get_bool("final_ln");
    c_.init = p.get_string("init");
    c_.readout_scale = p.get_float("readout_scale");
    c_.readout_center = p.get_bool("readout_center");
    c_.last_block_at_readout = p.get_bool("last_block_at_readout");
    parse_placement(c_.layer_norm);  // throws on an unknown placement
    if (c_.d_model % c_.heads != 0)
      throw std::invalid_argument("transformer: d_model " + std::to_string(c_.d_model) +
                                  " is not divisible by heads " + std::to_string(c_.heads));
    if (c_.dropout >= 1.0) throw std::invalid_argument("transformer: dropout must be < 1");
    if (c_.positions == "sinusoidal" && c_.d_model % 2 != 0)
      throw std::invalid_argument("transformer: sinusoidal positions need an even d_model");
  }

  std::shared_ptr<Model> build(const TaskSpec& spec) const override {
    if (spec.vocab_size < 1 || spec.seq_len < 1 || spec.num_classes < 1)
      throw std::invalid_argument("transformer: the task spec needs vocab_size, seq_len and "
                                  "num_classes >= 1");
    if (c_.tied_readout && spec.num_classes != spec.vocab_size)
      throw std::invalid_argument("transformer: tied_readout needs num_classes (" +
                                  std::to_string(spec.num_classes) + ") == vocab_size (" +
                                  std::to_string(spec.vocab_size) + ")");
    return std::make_shared<Transformer>(c_, spec);
  }

  std::shared_ptr<Model> build_ensemble(const TaskSpec& spec,
                                        const std::vector<std::shared_ptr<Model>>& members) const override {
    if (c_.dropout > 0.0)
      throw std::invalid_argument("transformer: run.ensemble needs dropout = 0 (each member would need its "
                                  "own dropout stream inside one batched pass); train dropout runs singly");
    if (members.empty()) throw std::invalid_argument("transformer: an ensemble needs at least one member");
    Config c = c_;
    c.members = static_cast<int64_t>(members.size());
    auto model = std::make_shared<Transformer>(c, spec);
    bind_members(*model, members);
    return model;
  }

 private:
  Config c_;
};

}  // namespace

void register_transformer(Registrar& r) {
  r.add_architecture(
      "transformer",
      "batch-first transformer; defaults are the default experiment's 1-layer mlp-pre model",
      Schema()
          .integer("depth", 1, "number of blocks").range(1, 1024)
          .integer("d_model", 128, "residual stream width").min(1)
          .integer("heads", 4, "attention heads (must divide d_model)").min(1)
          .integer("d_ff", 512, "MLP hidden width").min(1)
          .choice("activation", "relu", {"relu", "gelu"}, "MLP activation (gelu: exact erf form)")
          .real("dropout", 0.0,
                "dropout on embeddings, attention probabilities, MLP hidden and residual branches")
          .range(0.0, 1.0)
          .choice("positions", "learned", {"learned", "sinusoidal"},
                  "learned (parameter `pos`) or fixed sin/cos positions")
          .choice("embed_scale", "1", {"1", "sqrt_d"},
                  "token embeddings times 1 or √d_model before positions are added")
          .choice("layer_norm", "mlp-pre",
                  {"off", "pre", "post", "peri", "mlp-pre", "attn-pre", "attn-pre-qk", "attn-pre-v",
                   "pre-v"},
                  "LayerNorm placement (Singh et al. 2026); mlp-pre: LN on the MLP input only")
          .choice("init", "reference", {"reference", "pytorch", "xavier", "lecun", "nanda"},
                  "reference: grok_reference.py's init; pytorch: nn module defaults")
          .real("ln_eps", 1e-5, "LayerNorm epsilon (0 allowed)").min(0.0)
          .boolean("attn_bias", false, "biases on the q, k, v and output projections")
          .boolean("causal", false, "causal attention mask")
          .choice("readout", "last", {"last", "all"},
                  "logits from the last position [B,1,C] or from all positions [B,T,C]")
          .boolean("tied_readout", false, "readout with embed.weightᵀ (needs num_classes == vocab)")
          .boolean("final_ln", false, "LayerNorm before the readout")
          .real("readout_scale", 1.0, "α in logits = α · h @ readout")
          .boolean("readout_center", false,
                   "logits α·(f(θ) − f(θ₀)): centred on a frozen copy of the initial network, "
                   "kept as buffers init.*")
          .boolean("last_block_at_readout", true,
                   "with readout = last, run the last block at the last position only (nothing reads "
                   "the others), a one-block model's input side once per (token, position) pair when "
                   "the batch has over twice the vocabulary's rows, and its attention as one fused "
                   "kernel: the same logits, gradients equal up to float summation order, about 4x "
                   "faster on 3-token tasks; false computes every position, as PyTorch code does, "
                   "bit-for-bit"),
      [](const Params& p) { return std::make_shared<TransformerArchitecture>(p); });
}

}  // namespace groklab::architectures
