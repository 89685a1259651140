//! The demo: starts the local emulators (moto for ECR and STS, a distribution registry standing for the
//! account's ECR registry), makes a sample image in the Docker Engine, runs `ecr-step` on it as a pipeline
//! would, and checks in the registry that every tag landed. Run it with `scripts/demo`.

#[path = "../tests/testbed/mod.rs"]
mod testbed;

use testbed::{DEFAULT_ACCOUNT, Image, Moto, Registry, Step};

fn main() {
    println!("demo: starting moto (ECR, STS) and a registry for account {DEFAULT_ACCOUNT} on loopback");
    let moto = Moto::start();
    let registry = Registry::start(DEFAULT_ACCOUNT);
    let image = Image::random(2 * 1024 * 1024);
    println!("demo: made the local image {} (2 MiB of random data)", image.name);
    let step = Step::push(&moto, &registry, &image, "demo/app").env("PLUGIN_TAGS", "1.0.0,latest");
    println!(
        "demo: running ecr-step with PLUGIN_SOURCE={} PLUGIN_REPO=demo/app PLUGIN_TAGS=1.0.0,latest \
         PLUGIN_REGISTRY={} PLUGIN_REGION={}\n",
        image.name,
        registry.host,
        testbed::REGION
    );
    let run = step.run();
    print!("{}", run.stdout);
    eprint!("{}", run.stderr);
    if run.code != Some(0) {
        eprintln!("\ndemo: ecr-step failed (exit {:?})", run.code);
        std::process::exit(1);
    }
    println!();
    for tag in ["1.0.0", "latest"] {
        let reference = format!("{}/demo/app:{tag}", registry.host);
        let reported = run.reported_digest(&reference);
        match registry.digest("demo/app", tag) {
            Some(held) if held == reported => {
                println!("demo: the registry holds {reference} at {held}, as reported")
            }
            other => {
                eprintln!("demo: the registry holds {other:?} for {reference}, the step reported {reported}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "demo: done in {:.2} s (step run); emulators stopped",
        run.elapsed.as_secs_f64()
    );
}
