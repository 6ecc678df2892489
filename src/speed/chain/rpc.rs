//! EVM JSON-RPC over HTTP, blocking (a runtime of its own, as `ringseed ctl`'s client): the
//! handful of methods settlement needs. Every reply is bounded in size and time and checked
//! field by field; a node that answers nonsense gets an error, never a panic.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::speed::wallet::Address;

/// Largest reply read (a receipt with a few logs is a few KiB).
pub const MAX_REPLY: usize = 1 << 20;
/// Each request's deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("setting up the RPC client: {0}")]
    Setup(String),
    #[error("{method} to {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("{method}: the node's reply is not valid: {0}", .detail)]
    BadReply {
        method: &'static str,
        detail: String,
    },
    /// The node refused: a JSON-RPC error object (e.g. a revert on `eth_estimateGas`, with the
    /// revert data when the node gives it).
    #[error("{method}: node error {code}: {message}")]
    Node {
        method: &'static str,
        code: i64,
        message: String,
        data: Option<Vec<u8>>,
    },
}

/// What a mined transaction's receipt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// `status` 1: executed; 0: reverted (its gas is paid all the same).
    pub success: bool,
    pub gas_used: u128,
    pub effective_gas_price: u128,
    pub block: u64,
    pub contract_address: Option<Address>,
}

impl Receipt {
    /// What the sender paid for it.
    pub fn fee(&self) -> u128 {
        self.gas_used.saturating_mul(self.effective_gas_price)
    }
}

/// A connection to one JSON-RPC endpoint.
pub struct Rpc {
    url: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    next_id: std::cell::Cell<u64>,
}

/// A `0x`-prefixed hex quantity of at most 128 bits.
pub fn parse_quantity(v: &Value) -> Option<u128> {
    let s = v.as_str()?.strip_prefix("0x")?;
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// `0x`-prefixed hex data (bounded by the reply's size).
pub fn parse_data(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?.strip_prefix("0x")?;
    crate::speed::parse_hex(s)
}

pub fn quantity(v: u128) -> String {
    format!("0x{v:x}")
}

pub fn data(b: &[u8]) -> String {
    format!("0x{}", crate::metainfo::hex(b))
}

impl Rpc {
    pub fn new(url: &str) -> Result<Rpc, RpcError> {
        Rpc::with_timeout(url, REQUEST_TIMEOUT)
    }

    /// A client whose every request (connecting included) ends after `timeout`.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Rpc, RpcError> {
        let setup = |e: &dyn std::fmt::Display| RpcError::Setup(e.to_string());
        reqwest::Url::parse(url).map_err(|e| setup(&e))?;
        let tls = crate::tracker::client::tls_config().map_err(|e| setup(&e))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| setup(&e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(&e))?;
        Ok(Rpc {
            url: url.to_string(),
            http,
            runtime,
            next_id: std::cell::Cell::new(1),
        })
    }

    /// One call: the `result` of the reply, or the node's error.
    pub fn call(&self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let transport = |message: String| RpcError::Transport {
            method,
            url: self.url.clone(),
            message,
        };
        let bytes = self.runtime.block_on(async {
            let mut resp = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| transport(e.to_string()))?;
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport(e.to_string()))? {
                if out.len() + chunk.len() > MAX_REPLY {
                    return Err(transport(format!("reply over {MAX_REPLY} bytes")));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        })?;
        let bad = |detail: String| RpcError::BadReply { method, detail };
        let reply: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(err) = reply.get("error") {
            return Err(RpcError::Node {
                method,
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(500)
                    .collect(),
                data: err.get("data").and_then(parse_data),
            });
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| bad("no result".to_string()))
    }

    fn quantity_of(&self, method: &'static str, params: Value) -> Result<u128, RpcError> {
        let v = self.call(method, params)?;
        parse_quantity(&v).ok_or_else(|| RpcError::BadReply {
            method,
            detail: format!("not a quantity: {}", short(&v)),
        })
    }

    pub fn chain_id(&self) -> Result<u64, RpcError> {
        let v = self.quantity_of("eth_chainId", json!([]))?;
        u64::try_from(v).map_err(|_| RpcError::BadReply {
            method: "eth_chainId",
            detail: "over 64 bits".into(),
        })
    }

    /// The next nonce of `who`, counting its transactions still pending.
    pub fn pending_nonce(&self, who: &Address) -> Result<u64, RpcError> {
        let v = self.quantity_of("eth_getTransactionCount", json!([who.to_evm(), "pending"]))?;
        u64::try_from(v).map_err(|_| RpcError::BadReply {
            method: "eth_getTransactionCount",
            detail: "over 64 bits".into(),
        })
    }

    pub fn gas_price(&self) -> Result<u128, RpcError> {
        self.quantity_of("eth_gasPrice", json!([]))
    }

    pub fn balance(&self, who: &Address) -> Result<u128, RpcError> {
        self.quantity_of("eth_getBalance", json!([who.to_evm(), "latest"]))
    }

    /// Gas the call would use now; a revert comes back as [`RpcError::Node`] with its data.
    pub fn estimate_gas(
        &self,
        from: &Address,
        to: Option<&Address>,
        value: u128,
        input: &[u8],
    ) -> Result<u64, RpcError> {
        let mut tx = json!({"from": from.to_evm(), "value": quantity(value), "data": data(input)});
        if let Some(to) = to {
            tx["to"] = json!(to.to_evm());
        }
        let v = self.quantity_of("eth_estimateGas", json!([tx]))?;
        u64::try_from(v).map_err(|_| RpcError::BadReply {
            method: "eth_estimateGas",
            detail: "over 64 bits".into(),
        })
    }

    /// `eth_call` on the latest block.
    pub fn eth_call(&self, to: &Address, input: &[u8]) -> Result<Vec<u8>, RpcError> {
        let v = self.call(
            "eth_call",
            json!([{"to": to.to_evm(), "data": data(input)}, "latest"]),
        )?;
        parse_data(&v).ok_or_else(|| RpcError::BadReply {
            method: "eth_call",
            detail: format!("not data: {}", short(&v)),
        })
    }

    /// Sends a signed transaction; the node answers with its hash.
    pub fn send_raw(&self, raw: &[u8]) -> Result<[u8; 32], RpcError> {
        let v = self.call("eth_sendRawTransaction", json!([data(raw)]))?;
        parse_data(&v)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| RpcError::BadReply {
                method: "eth_sendRawTransaction",
                detail: format!("not a hash: {}", short(&v)),
            })
    }

    /// Whether the node knows the transaction (pending in its pool, or mined).
    pub fn transaction_known(&self, hash: &[u8; 32]) -> Result<bool, RpcError> {
        let v = self.call("eth_getTransactionByHash", json!([data(hash)]))?;
        Ok(!v.is_null())
    }

    /// The receipt of a mined transaction; `None` while it is pending (or unknown).
    pub fn receipt(&self, hash: &[u8; 32]) -> Result<Option<Receipt>, RpcError> {
        const M: &str = "eth_getTransactionReceipt";
        let v = self.call(M, json!([data(hash)]))?;
        if v.is_null() {
            return Ok(None);
        }
        let bad = |what: &str| RpcError::BadReply {
            method: M,
            detail: format!("{what} missing or malformed"),
        };
        let q = |k: &str| v.get(k).and_then(parse_quantity).ok_or_else(|| bad(k));
        let status = q("status")?;
        let contract_address = match v.get("contractAddress") {
            Some(Value::String(s)) => Some(Address::parse(s).map_err(|_| bad("contractAddress"))?),
            _ => None,
        };
        Ok(Some(Receipt {
            success: status == 1,
            gas_used: q("gasUsed")?,
            effective_gas_price: q("effectiveGasPrice")?,
            block: u64::try_from(q("blockNumber")?).map_err(|_| bad("blockNumber"))?,
            contract_address,
        }))
    }

    /// Polls for the receipt until `timeout`; `None` if the transaction is still not mined.
    pub fn wait_receipt(
        &self,
        hash: &[u8; 32],
        timeout: Duration,
        poll: Duration,
    ) -> Result<Option<Receipt>, RpcError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.receipt(hash)? {
                return Ok(Some(r));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(poll);
        }
    }
}

fn short(v: &Value) -> String {
    v.to_string().chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_data_are_parsed_strictly() {
        assert_eq!(parse_quantity(&json!("0x0")), Some(0));
        assert_eq!(parse_quantity(&json!("0xc7")), Some(199));
        assert_eq!(parse_quantity(&json!("c7")), None);
        assert_eq!(parse_quantity(&json!("0x")), None);
        assert_eq!(parse_quantity(&json!(199)), None);
        assert_eq!(
            parse_quantity(&json!(format!("0x1{}", "0".repeat(32)))),
            None
        );
        assert_eq!(parse_data(&json!("0x0102")), Some(vec![1, 2]));
        assert_eq!(parse_data(&json!("0x012")), None);
        assert_eq!(quantity(199), "0xc7");
    }

    /// A port nothing listens on: an error, quickly, no panic.
    #[test]
    fn an_unreachable_node_is_an_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let rpc = Rpc::new(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(matches!(rpc.chain_id(), Err(RpcError::Transport { .. })));
        assert!(Rpc::new("not a url").is_err());
    }
}
