#[path = "../tests/testbed/mod.rs"]
mod testbed;
use testbed::{DEFAULT_ACCOUNT, Moto, Registry, Step};
fn main() {
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let step = Step::aws(&moto)
        .env("PLUGIN_REGISTRY", &registry.host)
        .env("PLUGIN_REGION", testbed::REGION)
        .env("PLUGIN_REPO", "app");
    let text: String = step.envs().iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    std::fs::write("/tmp/scratch.env", text).unwrap();
    println!("ready {}", registry.host);
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}
