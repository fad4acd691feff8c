// A progress bar for long iterations (the tqdm habit of Python data work):
//
//   for (double m : mp::progress(pool.imap(analyze, shards)))  // total: shards.size()
//     results.push_back(m);
//
// It draws on stderr only when stderr is a terminal (or when asked), at most
// ten times a second, and finishes the line when the iteration ends.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdio>
#include <iterator>
#include <ranges>
#include <string>
#include <utility>

#include <unistd.h>

#include <mproc/detail/util/lean_std.hpp>

namespace mproc {

namespace detail {
class ProgressBar;
}

// How a progress bar looks and where it goes, set fluently:
//   mp::ProgressOptions("shards").width(40)
class ProgressOptions {
 public:
  ProgressOptions() = default;
  // `label`: text before the bar.
  explicit ProgressOptions(std::string label) : label_(std::move(label)) {}
  ProgressOptions(const char* label) : label_(label) {}  // NOLINT: "label" converts implicitly

  // Draw even when the stream is not a terminal (e.g. into a log file).
  ProgressOptions& force(bool on = true) {
    force_ = on;
    return *this;
  }
  // Where to draw (default stderr).
  ProgressOptions& stream(std::FILE* f) {
    stream_ = f;
    return *this;
  }
  // Width of the bar in characters (default 30).
  ProgressOptions& width(int columns) {
    width_ = columns > 0 ? columns : 1;
    return *this;
  }

 private:
  friend class detail::ProgressBar;
  std::string label_;
  bool force_ = false;
  std::FILE* stream_ = nullptr;
  int width_ = 30;
};

namespace detail {

class ProgressBar {
 public:
  ProgressBar(std::size_t total, ProgressOptions options)
      : total_(total), options_(std::move(options)), start_(std::chrono::steady_clock::now()) {
    if (options_.stream_ == nullptr) options_.stream_ = stderr;
    enabled_ = options_.force_ || ::isatty(::fileno(options_.stream_)) == 1;
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() { finish(); }

  void tick() {
    ++done_;
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done_ == total_ || now - last_ >= std::chrono::milliseconds(100)) {
      last_ = now;
      draw(now);
    }
  }

  void finish() {
    if (!enabled_ || finished_) return;
    finished_ = true;
    draw(std::chrono::steady_clock::now());
    std::fputc('\n', options_.stream_);
    std::fflush(options_.stream_);
  }

  std::size_t done() const noexcept { return done_; }

 private:
  void draw(std::chrono::steady_clock::time_point now) {
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done_) / secs : 0.0;
    const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const int filled = static_cast<int>(frac * options_.width_ + 0.5);
    std::string bar(static_cast<std::size_t>(options_.width_), ' ');
    for (int i = 0; i < filled && i < options_.width_; ++i) bar[static_cast<std::size_t>(i)] = '#';
    const double eta = rate > 0 && total_ > done_ ? static_cast<double>(total_ - done_) / rate : 0.0;
    if (total_ == 0)  // unknown total: the count and the rate
      std::fprintf(options_.stream_, "\r%s%s%zu %.1f it/s", options_.label_.c_str(), options_.label_.empty() ? "" : " ",
                   done_, rate);
    else
      std::fprintf(options_.stream_, "\r%s%s[%s] %zu/%zu %5.1f%% %.1f it/s eta %.1fs", options_.label_.c_str(),
                   options_.label_.empty() ? "" : " ", bar.c_str(), done_, total_, frac * 100.0, rate, eta);
    std::fflush(options_.stream_);
  }

  std::size_t total_;
  std::size_t done_ = 0;
  ProgressOptions options_;
  bool enabled_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace detail

// A view of `range` that advances a progress bar of `total` steps as it is
// iterated (an lvalue range is referenced, an rvalue one is owned). Use from
// one thread. Never throws itself; the range's own exceptions pass through.
template <std::ranges::input_range Range>
class Progress {
 public:
  Progress(Range&& range, std::size_t total, ProgressOptions options)
      : range_(std::forward<Range>(range)), bar_(total, std::move(options)) {}

  class iterator {
   public:
    using value_type = std::ranges::range_value_t<Range>;
    using difference_type = std::ptrdiff_t;
    using iterator_concept = std::input_iterator_tag;
    iterator() = default;
    decltype(auto) operator*() const { return *it_; }
    iterator& operator++() {
      ++it_;
      owner_->bar_.tick();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& i, std::default_sentinel_t) { return i.at_end(); }

   private:
    friend class Progress;
    iterator(Progress* owner, std::ranges::iterator_t<Range> it) : owner_(owner), it_(std::move(it)) {}
    bool at_end() const {
      const bool end = it_ == std::ranges::end(owner_->range_);
      if (end) owner_->bar_.finish();
      return end;
    }
    Progress* owner_ = nullptr;
    std::ranges::iterator_t<Range> it_{};
  };

  iterator begin() { return iterator(this, std::ranges::begin(range_)); }
  std::default_sentinel_t end() const noexcept { return {}; }

  // Steps counted so far.
  std::size_t done() const noexcept { return bar_.done(); }

 private:
  std::conditional_t<std::is_lvalue_reference_v<Range>, Range, std::remove_cvref_t<Range>> range_;
  detail::ProgressBar bar_;
};

// Wraps `range` (e.g. pool.imap(...)) in a progress bar of `total` steps.
template <std::ranges::input_range Range>
Progress<Range> progress(Range&& range, std::size_t total, ProgressOptions options = {}) {
  return Progress<Range>(std::forward<Range>(range), total, std::move(options));
}

// As progress(range, total, options), the total taken from the range: its
// size when sized, its length_hint() when it has one (an imap over a sized
// input, on every pool), else unknown (the bar counts steps only).
template <std::ranges::input_range Range>
Progress<Range> progress(Range&& range, ProgressOptions options = {}) {
  std::size_t total = 0;
  if constexpr (std::ranges::sized_range<Range&>)
    total = static_cast<std::size_t>(std::ranges::size(range));
  else if constexpr (requires { range.length_hint(); })
    total = range.length_hint().value_or(0);
  return Progress<Range>(std::forward<Range>(range), total, std::move(options));
}

}  // namespace mproc
