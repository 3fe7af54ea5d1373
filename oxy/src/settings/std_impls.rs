//! [`Settings`] for standard leaf types and containers.

use super::{DocMap, Settings};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

macro_rules! leaf_settings {
    ($($ty:ty),* $(,)?) => { $(impl Settings for $ty {})* };
}

leaf_settings!(
    (),
    bool,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    f32,
    f64,
    String,
    std::path::PathBuf,
    std::net::SocketAddr,
    std::net::IpAddr,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
    std::time::Duration,
    ipnet::IpNet,
);

impl<T: Settings> Settings for Vec<T> {
    fn add_docs(&self, path: &[String], docs: &mut DocMap) {
        if self.is_empty()
            && let Some(example) = T::example()
        {
            let mut key = path.to_vec();
            key.push("0".into());
            example.add_docs(&key, docs);
            if let Ok(value) = serde_yaml::to_value(&example) {
                docs.insert_example(path.to_vec(), value);
            }
        }
        for (i, item) in self.iter().enumerate() {
            let mut key = path.to_vec();
            key.push(i.to_string());
            item.add_docs(&key, docs);
        }
    }
}

impl<T: Settings> Settings for Option<T> {
    fn add_docs(&self, path: &[String], docs: &mut DocMap) {
        if let Some(v) = self {
            v.add_docs(path, docs);
        }
    }
}

impl<K, V> Settings for BTreeMap<K, V>
where
    K: ToString + Ord + serde::Serialize + serde::de::DeserializeOwned + Clone,
    K: std::fmt::Debug + Send + Sync + 'static,
    V: Settings,
{
    fn add_docs(&self, path: &[String], docs: &mut DocMap) {
        for (k, v) in self {
            let mut key = path.to_vec();
            key.push(k.to_string());
            v.add_docs(&key, docs);
        }
    }
}

impl<K, V> Settings for HashMap<K, V>
where
    K: ToString + Eq + Hash + serde::Serialize + serde::de::DeserializeOwned + Clone,
    K: std::fmt::Debug + Send + Sync + 'static,
    V: Settings,
{
    fn add_docs(&self, path: &[String], docs: &mut DocMap) {
        for (k, v) in self {
            let mut key = path.to_vec();
            key.push(k.to_string());
            v.add_docs(&key, docs);
        }
    }
}
