// A small persistent pool of worker threads for the kernels.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace draftwise {

class ThreadPool {
 public:
  // Task body: (task index, thread index in [0, size())).
  using Task = std::function<void(int64_t, int)>;

  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads that run tasks, the calling thread included.
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(i, thread) for every i in [0, num_tasks) and returns when all
  // are done. Tasks go in order to whichever thread is free (the caller
  // included), so a task must not depend on which thread runs it. Concurrent
  // callers run one after another.
  void run(int64_t num_tasks, const Task& task);

  // The process-wide pool, created on first use with DRAFTWISE_KERNEL_THREADS
  // threads, or as many as the CPUs this process may run on. A forked child
  // gets a new pool, because the parent's threads do not exist there.
  static ThreadPool& global();

 private:
  void worker_loop(int thread_index);
  void drain(int thread_index);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> active_{0};  // workers inside drain() for the current run
  // Guarded by wake_mutex_:
  int64_t num_tasks_ = 0;
  const Task* task_ = nullptr;
  bool open_ = false;  // a run accepts workers
  bool stopping_ = false;
};

// Threads the global pool has (or will have when created).
int configured_threads();

}  // namespace draftwise
