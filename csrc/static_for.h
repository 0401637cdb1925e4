// static_for<N>(body): calls body(std::integral_constant<int, I>{}) for I = 0 .. N - 1,
// so a runtime count can select a template instance. The anonymous namespace gives
// every translation unit its own copy, because the units use different target flags.
#pragma once

#include <utility>

namespace draftwise {
namespace {

template <int N, class F>
[[gnu::always_inline]] inline void static_for(F&& body) {
  [&]<int... I>(std::integer_sequence<int, I...>) __attribute__((always_inline)) {
    (body(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

}  // namespace
}  // namespace draftwise
