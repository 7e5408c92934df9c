use bkg_abi::{export_plugin, Context, Error, Host, Manifest, Plugin, Request, Response};

pub struct Hello {
    host: Host,
}

impl Plugin for Hello {
    fn manifest() -> Manifest {
        Manifest::new("hello", "Hello", env!("CARGO_PKG_VERSION"))
            .description("greets whoever calls it")
            .capability("greet", "answers 'hello, <body>'")
    }

    fn new(host: Host) -> Result<Self, Error> {
        Ok(Hello { host })
    }

    fn invoke(
        &self,
        capability: &str,
        req: Request<'_>,
        _: &Context<'_>,
    ) -> Result<Response, Error> {
        match capability {
            "greet" => {
                self.host.info("greeting someone");
                Ok(Response::text(format!("hello, {}", req.text()?)))
            }
            other => Err(Error::not_found(format!("no capability {other}"))),
        }
    }
}

export_plugin!(Hello);
