//! The `weir` binary: everything lives in the library; see `weir --help`.

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
