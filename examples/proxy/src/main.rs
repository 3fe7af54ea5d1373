//! The zero-code proxy: Oxy driven by its YAML settings alone, with no hooks.

use oxy::prelude::*;

/// An application with no hooks and no settings of its own.
#[derive(OxyExt)]
#[oxy(name = "oxy")]
struct Proxy;

#[async_trait]
impl OxyApp for Proxy {
    async fn start(_: AppServerSettings<Self>, _: ()) -> anyhow::Result<Hooks<Self>> {
        Ok(Hooks::default())
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<Proxy>()
}
