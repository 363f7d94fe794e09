//! Developer tool: `cargo run -p holdfast-spec --example check -- FILE...`
//! prints the canonical stack for the given spec files, or every
//! diagnostic, one per line.

fn main() {
    for f in std::env::args().skip(1) {
        match holdfast_spec::load_files(&[f]) {
            Ok(s) => println!("{s:#?}"),
            Err(e) => println!("{e}"),
        }
    }
}
