//! Writes every CI front end from the settings table: `step.yaml` (Codefresh), `action.yml` (GitHub
//! Actions), `templates/ecr-step.yml` (GitLab CI/CD component) and `docs/plugin.md` (Drone, Woodpecker,
//! Harness). `tests/frontends.rs` fails when a committed file differs from this output.
//!
//! Usage: `cargo run --example frontends`

use ecr_step::settings::frontends;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, text) in [
        ("step.yaml", frontends::step_yaml()),
        ("action.yml", frontends::action_yml()),
        ("templates/ecr-step.yml", frontends::gitlab_component()),
        ("docs/plugin.md", frontends::plugin_page()),
    ] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        std::fs::write(&path, text)?;
        println!("frontends: wrote {}", path.display());
    }
    Ok(())
}
