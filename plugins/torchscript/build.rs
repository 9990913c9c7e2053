//! Records where libtorch is: torch-sys links against `$LIBTORCH/lib` but
//! sets no run path, so without this every process loading the plugin would
//! need LD_LIBRARY_PATH. The plugin file gets that directory as its RUNPATH
//! (which covers its own libtorch_cpu.so, libc10.so, libgomp.so.1; those find
//! theirs through libtorch's own `$ORIGIN` RPATH).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
