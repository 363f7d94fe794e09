fn main() {
    for f in std::env::args().skip(1) {
        match holdfast_spec::load_files(&[f]) {
            Ok(s) => println!("{s:#?}"),
            Err(e) => println!("{e}"),
        }
    }
}
