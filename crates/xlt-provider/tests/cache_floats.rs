//! The response cache gives back the numbers it stored, bit for bit: a resumed or cached
//! evaluation records the same log-probabilities as a fresh one. serde_json's default float
//! parser can land one ulp off (`-2.0519654542928762` read back as `-2.051965454292876`, found
//! by a trial that killed a local study during evaluation); the workspace builds it with
//! `float_roundtrip`.

use xlt_provider::*;

/// Doubles spread over the magnitudes log-probabilities take, from a fixed generator.
fn values(n: usize) -> Vec<f64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            -(30.0f64).powf(unit) * unit
        })
        .collect()
}

#[test]
fn letter_and_token_logprobs_come_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ResponseCache::new(dir.path());
    let mut all = vec![-2.051_965_454_292_876_2];
    all.extend(values(4000));
    for (i, chunk) in all.chunks(4).enumerate() {
        let request = ChatRequest::new("m", vec![ChatMessage::new(Role::User, format!("{i}"))]);
        let letters = std::array::from_fn(|k| chunk.get(k).copied());
        let response = ChatResponse {
            model: "m".into(),
            text: String::new(),
            finish_reason: Some("letters".into()),
            usage: Usage {
                prompt_tokens: 1,
                completion_tokens: 0,
            },
            top_logprobs: Some(
                chunk
                    .iter()
                    .map(|&logprob| TokenLogprob {
                        token: "A".into(),
                        logprob,
                    })
                    .collect(),
            ),
            letter_logprobs: Some(LetterLogprobs::from_array(letters)),
            rate_limit: None,
        };
        cache.put(&request, &response).unwrap();
        let back = cache.get(&request).expect("the entry just written");
        let bits = |r: &ChatResponse| -> Vec<u64> {
            let l = r.letter_logprobs.as_ref().unwrap().to_array();
            l.into_iter()
                .flatten()
                .chain(r.top_logprobs.iter().flatten().map(|t| t.logprob))
                .map(f64::to_bits)
                .collect()
        };
        assert_eq!(bits(&back), bits(&response), "values {chunk:?}");
    }
}
