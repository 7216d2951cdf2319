//! The `weir` binary: everything lives in the library; see `weir --help`.

// Events are many small, short-lived JSON allocations spread over threads; glibc's malloc
// spent over a quarter of the ingest path's CPU in allocation and freeing (perf, see
// BENCHMARKS.md), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
