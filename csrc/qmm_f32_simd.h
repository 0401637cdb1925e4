// Quantized matmul with float32 math, written once over a per-ISA helper type.
//
// An ISA translation unit defines `struct Isa` and then includes this file
// inside its own anonymous namespace, so every function here gets internal
// linkage and is compiled only with that unit's target flags. `Isa` provides:
//   Vec, kLanes (8 or 16), zero(), load(p), store(p, v), broadcast(f),
//   fmadd(a, b, c) = a * b + c rounded once, hsum(v) with a fixed tree,
//   unpack<Bits, J>(block): elements [J * kLanes, (J + 1) * kLanes) of a
//     32-element block (4 * Bits bytes) as float vectors of exact integers,
//   kLookup4, and where it is true table4(scale, bias) (the 16 values
//     fmadd(q, scale, bias) for q = 0 .. 15) and lookup4<J>(block, table)
//     (the elements unpack<4, J> selects, taken from the table),
//   and the tiling constants used below.
//
// Reduction order, identical in both paths below: lane l of the accumulator
// for (m, n) sums x[m, k] * w[n, k] over k = l, l + kLanes, l + 2 * kLanes, ...
// in increasing k with one fused multiply-add each, where
// w = fmadd(q, scale, bias). Then hsum reduces the lanes. Neither the row
// count, nor the row's position, nor the tiling, nor the thread changes it.
//
// Requires <cstdint>, <utility> and the ISA's intrinsics header. It calls no
// std function, so no out-of-line library code is compiled with ISA flags.

constexpr int kBlockElements = 32;

template <int N, class F>
inline void static_for(F&& body) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (body(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

inline int64_t min_i64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

inline const uint8_t* weight_row(const draftwise::QmmProblem& p, int64_t n) {
  return reinterpret_cast<const uint8_t*>(p.weight) + n * (p.k * p.bits / 8);
}

// The dequantized weights of one group of one output column:
// w = fmadd(q, scale, bias) for each element's integer q. An ISA with
// `kLookup4` computes those 16 values once per group for 4-bit weights and
// then picks them by index (same bits, fewer instructions per vector).
template <int Bits, bool Lookup = (Bits == 4 && Isa::kLookup4)>
struct GroupWeights {
  typename Isa::Vec scale;
  typename Isa::Vec bias;
  GroupWeights() = default;
  GroupWeights(float s, float b) : scale(Isa::broadcast(s)), bias(Isa::broadcast(b)) {}
  template <int J>
  typename Isa::Vec get(const uint8_t* block) const {
    return Isa::fmadd(Isa::template unpack<Bits, J>(block), scale, bias);
  }
};

#if defined(DRAFTWISE_ISA_LOOKUP4)  // defined by units whose Isa has table4 and lookup4
template <int Bits>
struct GroupWeights<Bits, true> {
  typename Isa::Vec table;
  GroupWeights() = default;
  GroupWeights(float s, float b) : table(Isa::table4(Isa::broadcast(s), Isa::broadcast(b))) {}
  template <int J>
  typename Isa::Vec get(const uint8_t* block) const {
    return Isa::template lookup4<J>(block, table);
  }
};
#endif

// ---------------------------------------------------------------------------
// Few rows: unpack each weight vector in registers and use it for every row.
// ---------------------------------------------------------------------------

template <int Bits, int MR, int NR>
void inline_tile(const draftwise::QmmProblem& p, int64_t n0) {
  using Vec = typename Isa::Vec;
  constexpr int kLanes = Isa::kLanes;
  constexpr int kVectorsPerBlock = kBlockElements / kLanes;
  const int64_t groups = p.k / p.group_size;
  const int64_t blocks_per_group = p.group_size / kBlockElements;

  const uint8_t* rows[NR];
  for (int c = 0; c < NR; ++c) {
    rows[c] = weight_row(p, n0 + c);
  }
  Vec acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = Isa::zero();
    }
  }

  for (int64_t g = 0; g < groups; ++g) {
    GroupWeights<Bits> group[NR];
    for (int c = 0; c < NR; ++c) {
      group[c] = GroupWeights<Bits>(p.scales[(n0 + c) * groups + g],
                                    p.biases[(n0 + c) * groups + g]);
    }
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      static_for<kVectorsPerBlock>([&](auto j) {
        const int64_t k = b * kBlockElements + j * kLanes;
        Vec w[NR];
        for (int c = 0; c < NR; ++c) {
          w[c] = group[c].template get<j>(rows[c] + b * 4 * Bits);
        }
        for (int r = 0; r < MR; ++r) {
          const Vec xv = Isa::load(p.x + r * p.k + k);
          for (int c = 0; c < NR; ++c) {
            acc[r][c] = Isa::fmadd(xv, w[c], acc[r][c]);
          }
        }
      });
    }
  }

  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      p.out[r * p.n + n0 + c] = Isa::hsum(acc[r][c]);
    }
  }
}

template <int Bits, int MR>
void inline_columns(const draftwise::QmmProblem& p, int64_t n_begin, int64_t n_end) {
  constexpr int NR = Isa::kInlineColumns[MR];
  int64_t n0 = n_begin;
  for (; n0 + NR <= n_end; n0 += NR) {
    inline_tile<Bits, MR, NR>(p, n0);
  }
  for (; n0 < n_end; ++n0) {
    inline_tile<Bits, MR, 1>(p, n0);
  }
}

// ---------------------------------------------------------------------------
// Many rows: dequantize a tile of kTileColumns x kSlab weights into scratch
// once, then run every row over it. Accumulator vectors live in scratch
// between slabs, so each lane still sums k in increasing order.
// ---------------------------------------------------------------------------

template <int Bits>
void dequantize_tile(const draftwise::QmmProblem& p, int64_t n0, int columns, int64_t k0,
                     int64_t slab, float* tile) {
  constexpr int kLanes = Isa::kLanes;
  const int64_t groups = p.k / p.group_size;
  for (int c = 0; c < columns; ++c) {
    const uint8_t* row = weight_row(p, n0 + c);
    float* dst = tile + c * slab;
    for (int64_t b = k0 / kBlockElements; b < (k0 + slab) / kBlockElements; ++b) {
      const int64_t g = b * kBlockElements / p.group_size;
      const GroupWeights<Bits> group(p.scales[(n0 + c) * groups + g],
                                     p.biases[(n0 + c) * groups + g]);
      const uint8_t* block = row + b * 4 * Bits;
      static_for<kBlockElements / kLanes>([&](auto j) {
        const auto w = group.template get<j>(block);
        Isa::store(dst + (b * kBlockElements - k0) + j * kLanes, w);
      });
    }
  }
}

// Rows [r0, r0 + MR) x tile columns [c0, c0 + NR) over one slab. `x` points at
// row 0 of the row block at column k0; `state` holds one Vec per (row, column).
template <int MR, int NR>
void tile_kernel(const float* x, int64_t ldx, const float* tile, int64_t slab, float* state,
                 int r0, int c0) {
  using Vec = typename Isa::Vec;
  constexpr int kLanes = Isa::kLanes;
  constexpr int kStateRow = Isa::kTileColumns * kLanes;
  Vec acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      acc[r][c] = Isa::load(state + (r0 + r) * kStateRow + (c0 + c) * kLanes);
    }
  }
  for (int64_t kk = 0; kk < slab; kk += kLanes) {
    Vec w[NR];
    for (int c = 0; c < NR; ++c) {
      w[c] = Isa::load(tile + (c0 + c) * slab + kk);
    }
    for (int r = 0; r < MR; ++r) {
      const Vec xv = Isa::load(x + (r0 + r) * ldx + kk);
      for (int c = 0; c < NR; ++c) {
        acc[r][c] = Isa::fmadd(xv, w[c], acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      Isa::store(state + (r0 + r) * kStateRow + (c0 + c) * kLanes, acc[r][c]);
    }
  }
}

template <int MR>
void tile_row_block(const float* x, int64_t ldx, const float* tile, int64_t slab, float* state,
                    int r0, int columns) {
  constexpr int NR = Isa::kTileNR;
  int c0 = 0;
  for (; c0 + NR <= columns; c0 += NR) {
    tile_kernel<MR, NR>(x, ldx, tile, slab, state, r0, c0);
  }
  static_for<NR>([&](auto rest) {
    if (rest != 0 && columns - c0 == rest) {
      tile_kernel<MR, rest>(x, ldx, tile, slab, state, r0, c0);
    }
  });
}

void tile_rows(const float* x, int64_t ldx, const float* tile, int64_t slab, float* state,
               int rows, int columns) {
  constexpr int MR = Isa::kTileMR;
  int r0 = 0;
  for (; r0 + MR <= rows; r0 += MR) {
    tile_row_block<MR>(x, ldx, tile, slab, state, r0, columns);
  }
  static_for<MR>([&](auto rest) {
    if (rest != 0 && rows - r0 == rest) {
      tile_row_block<rest>(x, ldx, tile, slab, state, r0, columns);
    }
  });
}

template <int Bits>
void tiled_columns(const draftwise::QmmProblem& p, int64_t n_begin, int64_t n_end,
                   float* scratch) {
  constexpr int kLanes = Isa::kLanes;
  constexpr int kStateRow = Isa::kTileColumns * kLanes;
  float* tile = scratch;
  float* state = scratch + Isa::kTileColumns * Isa::kSlab;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += Isa::kTileColumns) {
    const int columns = static_cast<int>(min_i64(Isa::kTileColumns, n_end - n0));
    for (int64_t m0 = 0; m0 < p.m; m0 += Isa::kRowBlock) {
      const int rows = static_cast<int>(min_i64(Isa::kRowBlock, p.m - m0));
      for (int i = 0; i < rows * kStateRow; ++i) {
        state[i] = 0.0f;
      }
      for (int64_t k0 = 0; k0 < p.k; k0 += Isa::kSlab) {
        const int64_t slab = min_i64(Isa::kSlab, p.k - k0);
        dequantize_tile<Bits>(p, n0, columns, k0, slab, tile);
        tile_rows(p.x + m0 * p.k + k0, p.k, tile, slab, state, rows, columns);
      }
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < columns; ++c) {
          const auto acc = Isa::load(state + r * kStateRow + c * kLanes);
          p.out[(m0 + r) * p.n + n0 + c] = Isa::hsum(acc);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Entry points.
// ---------------------------------------------------------------------------

template <int Bits>
void run_bits(const draftwise::QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  if (p.m > Isa::kInlineMaxRows) {
    tiled_columns<Bits>(p, n_begin, n_end, scratch);
    return;
  }
  static_for<Isa::kInlineMaxRows + 1>([&](auto rows) {
    if (rows != 0 && p.m == rows) {
      inline_columns<Bits, rows>(p, n_begin, n_end);
    }
  });
}

int64_t simd_column_chunk(const draftwise::QmmProblem& p) {
  return p.m > Isa::kInlineMaxRows ? Isa::kTileColumns : Isa::kInlineChunk;
}

size_t simd_scratch_floats(const draftwise::QmmProblem& p) {
  if (p.m <= Isa::kInlineMaxRows) {
    return 0;
  }
  return static_cast<size_t>(Isa::kTileColumns) * Isa::kSlab +
         static_cast<size_t>(Isa::kRowBlock) * Isa::kTileColumns * Isa::kLanes;
}

void simd_run(const draftwise::QmmProblem& p, int64_t n_begin, int64_t n_end, float* scratch) {
  switch (p.bits) {
    case 2: return run_bits<2>(p, n_begin, n_end, scratch);
    case 3: return run_bits<3>(p, n_begin, n_end, scratch);
    case 4: return run_bits<4>(p, n_begin, n_end, scratch);
    case 5: return run_bits<5>(p, n_begin, n_end, scratch);
    case 6: return run_bits<6>(p, n_begin, n_end, scratch);
    case 8: return run_bits<8>(p, n_begin, n_end, scratch);
    default: return;  // rejected when the op is built
  }
}
