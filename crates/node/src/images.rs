//! What architectures an image offers, read from its registry before a deploy is
//! planned (oci-client: the registry protocol is the crate's, not ours): a manifest
//! list's `linux/*` platforms, or a single manifest's config `architecture`. Placement
//! then puts replicas only on nodes of those (`state::plan::plan_deploy_images`).
//!
//! Plain HTTP only to a registry on this machine's loopback, as Docker does. Anonymous
//! access: a registry that wants credentials is refused with its answer (credentials
//! from a secret are not built yet).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use holdfast_spec::Stack;
use holdfast_state::plan::ImageArchs;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// How long one image's manifest may take.
const READ_WITHIN: Duration = Duration::from_secs(15);

/// One client per registry for the life of the node: a client holds its TLS roots and
/// connection pool, worth building once rather than on every deploy.
fn client_for(registry: &str, protocol: ClientProtocol) -> Client {
    static CLIENTS: std::sync::Mutex<BTreeMap<String, Client>> = std::sync::Mutex::new(BTreeMap::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    clients
        .entry(registry.to_string())
        .or_insert_with(|| Client::new(ClientConfig { protocol, ..Default::default() }))
        .clone()
}

/// The architectures `reference` offers (`amd64`, `arm64`, ...), or why they cannot be
/// known.
pub async fn archs(reference: &str) -> Result<BTreeSet<String>, String> {
    // reqwest is built without a default crypto provider: ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = holdfast_spec::image::parse_image(reference)?;
    // Built from our own parse: oci-spec's reference parser compiles a Unicode regex that
    // keeps about 11 MB of heap for the life of the process.
    let (registry, repository) = (parsed.registry.clone(), parsed.repository.clone());
    let r = match (parsed.tag.clone(), parsed.digest.clone()) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(registry, repository, tag, digest),
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or_else(|| "latest".into())),
    };
    let protocol = if parsed.registry_is_loopback() {
        ClientProtocol::HttpsExcept(vec![parsed.registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = client_for(&parsed.registry, protocol);
    let auth = RegistryAuth::Anonymous;
    let read = async {
        let (manifest, _) = client.pull_manifest(&r, &auth).await.map_err(|e| e.to_string())?;
        match manifest {
            OciManifest::ImageIndex(index) => Ok(index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .filter(|p| p.os.to_string() == "linux")
                .map(|p| p.architecture.to_string())
                .collect::<BTreeSet<String>>()),
            OciManifest::Image(_) => {
                let (_, _, config) = client.pull_manifest_and_config(&r, &auth).await.map_err(|e| e.to_string())?;
                let config: serde_json::Value =
                    serde_json::from_str(&config).map_err(|e| format!("the image config is not JSON: {e}"))?;
                let arch = config["architecture"].as_str().unwrap_or("").to_string();
                if arch.is_empty() {
                    return Err("the image config names no architecture".to_string());
                }
                Ok(BTreeSet::from([arch]))
            }
        }
    };
    let archs = tokio::time::timeout(READ_WITHIN, read)
        .await
        .map_err(|_| format!("the registry did not answer within {READ_WITHIN:?}"))??;
    if archs.is_empty() {
        return Err("its manifest list has no linux image".to_string());
    }
    Ok(archs)
}

/// Every image of `stack`, read at once; the first that cannot be read is the error
/// (a deploy then changes nothing).
pub async fn resolve(stack: &Stack) -> Result<ImageArchs, String> {
    let images: BTreeSet<&String> = stack.services.values().filter_map(|s| s.image.as_ref()).collect();
    let reads = images.iter().map(|i| async move { (i.to_string(), archs(i).await) });
    let mut out = ImageArchs::new();
    for (image, r) in futures::future::join_all(reads).await {
        match r {
            Ok(a) => {
                out.insert(image, a);
            }
            Err(e) => return Err(format!("cannot read the manifest of image {image}: {e}")),
        }
    }
    Ok(out)
}
