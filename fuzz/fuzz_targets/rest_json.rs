//! Any bytes as the JSON of a REST request: decoding into each request
//! message the gateway serves either yields the message or names what was
//! wrong, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ork_proto::decode::message;
use ork_proto::v1;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    match pick % 14 {
        0 => drop(message::<v1::DeployWorkflowRequest>(value)),
        1 => drop(message::<v1::ListWorkflowsRequest>(value)),
        2 => drop(message::<v1::GetWorkflowRequest>(value)),
        3 => drop(message::<v1::DeleteWorkflowRequest>(value)),
        4 => {
            if let Ok(request) = message::<v1::StartRunRequest>(value) {
                // The run input goes on as JSON.
                let _ = ork_proto::json::from_proto_opt(request.input.as_ref());
            }
        }
        5 => drop(message::<v1::ListRunsRequest>(value)),
        6 => drop(message::<v1::GetRunRequest>(value)),
        7 => drop(message::<v1::CancelRunRequest>(value)),
        8 => drop(message::<v1::RetryRunRequest>(value)),
        9 => drop(message::<v1::ListTaskRunsRequest>(value)),
        10 => drop(message::<v1::GetTaskLogsRequest>(value)),
        11 => drop(message::<v1::CreateTokenRequest>(value)),
        12 => drop(message::<v1::ListTokensRequest>(value)),
        _ => drop(message::<v1::RevokeTokenRequest>(value)),
    }
});
