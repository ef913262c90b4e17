//! `wasmscaler inspect`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::CacheArgs;

#[derive(Debug, Args)]
pub(super) struct InspectArgs {
    /// The component (.wasm) to inspect.
    component: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

pub(super) async fn run(args: InspectArgs) -> anyhow::Result<()> {
    let sandbox = args.cache.sandbox()?;
    let loaded = sandbox
        .load_file(&args.component)
        .await
        .with_context(|| format!("loading {}", args.component.display()))?;
    let info = loaded.component.info();
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let shape = crate::sandbox::compile::measure(&bytes);
    if args.json {
        let mut report = serde_json::to_value(&info)?;
        report["shape"] = serde_json::to_value(shape)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let world = serde_json::to_value(info.world)?;
    println!("component:    {}", args.component.display());
    println!("world:        {}", world.as_str().unwrap_or("?"));
    println!("size:         {} bytes", info.size);
    println!("sha256:       {}", info.sha256);
    let caps: Vec<String> = info.capabilities.iter().map(ToString::to_string).collect();
    println!(
        "capabilities: {}",
        if caps.is_empty() {
            "none".into()
        } else {
            caps.join(", ")
        }
    );
    println!(
        "shape:        {} core modules, {} functions, nesting depth {}, at most {} locals, \
         largest body {} bytes",
        shape.modules,
        shape.functions,
        shape.max_nesting_depth,
        shape.max_locals,
        shape.max_function_body_bytes
    );
    println!("exports:");
    for export in &info.exports {
        println!("  {export}");
    }
    println!("imports:");
    for import in &info.imports {
        println!("  {import}");
    }
    Ok(())
}
