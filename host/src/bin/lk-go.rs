//! The `lk-go` command. All logic lives in the library (`lk_go::cli`).

fn main() {
    std::process::exit(lk_go::cli::main());
}
