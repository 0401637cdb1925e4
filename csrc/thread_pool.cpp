#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <string>

namespace draftwise {
namespace {

// Workers poll this long for the next job before they sleep. Decoding runs
// a few hundred short matmuls per token; waking a sleeping thread costs
// tens of microseconds each time.
constexpr auto kSpinTime = std::chrono::microseconds(200);

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int cpus_available() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
  }
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware > 0 ? static_cast<int>(hardware) : 1;
}

ThreadPool* g_pool = nullptr;
std::once_flag g_atfork_once;

}  // namespace

int configured_threads() {
  if (const char* value = std::getenv("DRAFTWISE_KERNEL_THREADS")) {
    const int requested = std::atoi(value);
    if (requested > 0) {
      return requested;
    }
  }
  return cpus_available();
}

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) {
    worker.join();
  }
}

ThreadPool& ThreadPool::global() {
  std::call_once(g_atfork_once, [] {
    // The parent's pool is leaked in the child: its threads are gone, and
    // its destructor would wait for them.
    pthread_atfork(nullptr, nullptr, [] { g_pool = nullptr; });
  });
  static std::mutex create_mutex;
  std::lock_guard<std::mutex> lock(create_mutex);
  if (g_pool == nullptr) {
    // Never destroyed: joining threads during interpreter exit can deadlock.
    g_pool = new ThreadPool(configured_threads());
  }
  return *g_pool;
}

void ThreadPool::drain(int thread_index) {
  while (true) {
    const int64_t i = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (i >= num_tasks_) {
      return;
    }
    (*task_)(i, thread_index);
  }
}

void ThreadPool::run(int64_t num_tasks, const Task& task) {
  if (num_tasks <= 0) {
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  if (workers_.empty() || num_tasks == 1) {
    for (int64_t i = 0; i < num_tasks; ++i) {
      task(i, 0);
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    task_ = &task;
    num_tasks_ = num_tasks;
    next_task_.store(0, std::memory_order_relaxed);
    open_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  drain(0);
  // Workers that have not joined by now never will, so a worker the OS has
  // not scheduled yet cannot hold this call up.
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    open_ = false;
  }
  while (active_.load(std::memory_order_acquire) != 0) {
    cpu_relax();
  }
}

void ThreadPool::worker_loop(int thread_index) {
  uint64_t seen = 0;
  while (true) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    int polls = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      cpu_relax();
      if (++polls % 64 != 0) {
        continue;
      }
      if (std::chrono::steady_clock::now() < spin_until) {
        std::this_thread::yield();
        continue;
      }
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || generation_.load(std::memory_order_acquire) != seen;
      });
      break;
    }
    bool joined = false;
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      if (stopping_) {
        return;
      }
      seen = generation_.load(std::memory_order_relaxed);
      if (open_) {
        active_.fetch_add(1, std::memory_order_relaxed);
        joined = true;
      }
    }
    if (joined) {
      drain(thread_index);
      active_.fetch_sub(1, std::memory_order_release);
    }
  }
}

}  // namespace draftwise
