//! Letter scoring on tiny random models (issue #22): the letters' log-probabilities are the
//! full forward pass's, batched equals unbatched, a token ` A` counts for `A`, and the
//! provider answers a letters request (alone and among generation requests) with them; a
//! shared context (the system turn) computed once scores as the whole prompt does.

use std::sync::Arc;

use tokenizers::Tokenizer;
use xlt_local::testing::{SMOLLM2_TEMPLATE, config, random_model, rebuild, tokenizer_json};
use xlt_local::{
    ChatPrompt, ChatTemplate, LoadOptions, LocalModel, LocalProvider, LoraConfig, Ops,
    ServeOptions, attach_lora,
};
use xlt_provider::{
    ChatMessage, ChatModel, ChatRequest, LetterSource, Role, log_add_exp, score_letters,
};

/// The tiny byte-level tokenizer with one more token, `ĠA` (` A`), id 259 (the tiny
/// config's spare id), and the merge that makes it.
fn tokenizer_with_space_a() -> Tokenizer {
    let mut json = tokenizer_json();
    json["model"]["vocab"]["ĠA"] = 259.into();
    json["model"]["merges"] = serde_json::json!([["Ġ", "A"]]);
    json.to_string().parse().unwrap()
}

/// A tiny Llama with frozen weights, as a loaded model has them.
fn model() -> LocalModel {
    let cfg = config("llama");
    let (vm, _) = random_model(&cfg, Ops::Fused);
    let model = rebuild(&cfg, &vm, Ops::Fused, candle_core::DType::F32);
    let template = ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap();
    LocalModel::from_parts(
        model,
        tokenizer_with_space_a(),
        template,
        cfg.eos_token_id.clone(),
    )
}

fn prompt(m: &LocalModel, text: &str) -> Vec<u32> {
    m.encode_chat(&[ChatMessage::new(Role::User, text)])
        .unwrap()
}

const PROMPTS: [&str; 4] = [
    "Q?\nA. x\nB. y\nC. z\nD. w",
    "A longer question, with more tokens in it?\nA. one\nB. two\nC. three\nD. four",
    "Hi",
    "Which is it: A or B?",
];

// Both sides are the same f32 network; the letter path sums its log-softmax in f64, the
// reference path in f32 (candle's log_softmax), so they differ in the last bits of a
// log-probability of magnitude ~5: 1e-4 nat is far below any real difference (a wrong
// position or a missing token moves a letter by tenths to whole nats).
const TOL: f64 = 1e-4;

#[test]
fn the_letter_tokens_are_every_token_that_trims_to_the_letter() {
    let m = model();
    let tok = m.tokenizer();
    let ids = m.letter_token_ids();
    let a = tok.token_to_id("A").unwrap();
    assert_eq!(ids[0], vec![a, 259], "A and ` A`");
    for (k, l) in ["B", "C", "D"].iter().enumerate() {
        assert_eq!(ids[k + 1], vec![tok.token_to_id(l).unwrap()], "letter {l}");
    }
    // The prompt " A" is encoded with the merged token, so the test of ` A` is not vacuous.
    assert!(tok.encode(" A", false).unwrap().get_ids().contains(&259));
}

#[test]
fn letter_logprobs_equal_the_full_forward_pass_and_batched_equals_alone() {
    let m = model();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| prompt(&m, p)).collect();
    let ids = m.letter_token_ids().clone();
    let batched = m.letter_logprobs(&prompts).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let full = &m.next_token_logprobs(std::slice::from_ref(p)).unwrap()[0];
        let alone = m.letter_logprobs(std::slice::from_ref(p)).unwrap()[0];
        for k in 0..4 {
            let reference = ids[k]
                .iter()
                .map(|&id| f64::from(full[id as usize]))
                .fold(f64::NEG_INFINITY, log_add_exp);
            for (what, ours) in [("alone", alone[k]), ("batched", batched[i][k])] {
                assert!(
                    (ours - reference).abs() < TOL,
                    "prompt {i}, letter {k}, {what}: {ours} against the forward pass's {reference}"
                );
            }
        }
        // Packed passes: the same bits alone as in the batch.
        assert!(m.scores_batch_invariant());
        assert_eq!(alone, batched[i], "prompt {i}");
        // ` A` is part of A: A's probability exceeds the bare token's alone.
        let bare = f64::from(full[ids[0][0] as usize]);
        assert!(batched[i][0] > bare, "{} <= {bare}", batched[i][0]);
    }
    assert!(m.letter_logprobs::<Vec<u32>>(&[]).unwrap().is_empty());
    assert!(m.letter_logprobs(&[vec![]]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_scores_letters_beside_generation_requests() {
    let m = model();
    // As the provider encodes them: with their context.
    let expected: Vec<[f64; 4]> = PROMPTS
        .iter()
        .map(|p| {
            let prompt = m
                .encode_chat_prompt(&[ChatMessage::new(Role::User, *p)])
                .unwrap();
            m.letter_logprobs(&[prompt]).unwrap()[0]
        })
        .collect();
    let provider = Arc::new(LocalProvider::new(
        LoadOptions::default(),
        ServeOptions {
            max_batch: 3,
            max_concurrent: 16,
        },
    ));
    provider.insert("tiny", m).await;
    let request = |text: &str| ChatRequest::new("tiny", vec![ChatMessage::new(Role::User, text)]);
    // Letter requests and generation requests at once: each batch holds one kind.
    let mut handles = Vec::new();
    for (i, text) in PROMPTS.iter().enumerate() {
        let p = provider.clone();
        let r = request(text);
        handles.push(tokio::spawn(async move {
            (i, score_letters(p.as_ref(), &r).await.unwrap())
        }));
        let p = provider.clone();
        let mut g = request(text);
        g.max_tokens = Some(3);
        tokio::spawn(async move { p.chat(&g).await.unwrap() });
    }
    for h in handles {
        let (i, s) = h.await.unwrap();
        assert_eq!(s.source, LetterSource::FullVocabulary);
        assert_eq!(s.response.usage.completion_tokens, 0);
        assert!(s.response.text.is_empty());
        for (k, v) in s.logprobs.to_array().into_iter().enumerate() {
            let v = v.expect("every letter is scored over the full vocabulary");
            // Letters batch in the provider, and a batch gives each prompt its own bits.
            assert_eq!(v, expected[i][k], "prompt {i}, letter {k}");
        }
        assert!(s.logprobs.mass() > 0.0 && s.logprobs.mass() < 1.0);
    }
}

/// The study's prompt shape: a system message, then the question.
fn chat(system: &str, text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, system),
        ChatMessage::new(Role::User, text),
    ]
}

const SYSTEM: &str = "Reply with the letter of the correct option and nothing else.";

/// The system turn and the user turn's header are the prompt's context: its tokens lead the prompt, and scoring with
/// its keys and values computed once gives what a pass over the whole prompt gives, alone
/// and in a batch, for letters and for the full vocabulary; a prompt scored again after
/// other prompts (the context kept) gives the same numbers bit for bit as on a fresh model.
#[test]
fn a_shared_context_scores_as_the_whole_prompt_and_the_same_after_any_history() {
    let m = model();
    let prompts: Vec<ChatPrompt> = PROMPTS
        .iter()
        .map(|p| m.encode_chat_prompt(&chat(SYSTEM, p)).unwrap())
        .collect();
    let system_turn = m
        .tokenizer()
        .encode(
            m.template()
                .render(&[ChatMessage::new(Role::System, SYSTEM)], false)
                .unwrap()
                .as_str(),
            false,
        )
        .unwrap()
        .get_ids()
        .len();
    // The user turn's header: `<|im_start|>`, `user` and a newline in the tiny tokenizer.
    let header = m
        .tokenizer()
        .encode("<|im_start|>user\n", false)
        .unwrap()
        .get_ids()
        .len();
    for (p, text) in prompts.iter().zip(PROMPTS) {
        assert_eq!(p.context(), system_turn + header, "{text}");
        assert!(system_turn > 5, "the system turn has {system_turn} tokens");
        assert_eq!(p.tokens(), m.encode_chat(&chat(SYSTEM, text)).unwrap());
    }
    // One message: everything before its text (SmolLM2's template adds its own system
    // turn, then the header).
    let alone = m
        .encode_chat_prompt(&[ChatMessage::new(Role::User, "Hi")])
        .unwrap();
    let after = m
        .tokenizer()
        .encode("Hi<|im_end|>\n<|im_start|>assistant\n", false)
        .unwrap()
        .get_ids()
        .len();
    assert_eq!(alone.context(), alone.tokens().len() - after);
    assert!(header >= 3, "the header has {header} tokens");
    // An empty message: all but the last token.
    let empty = m
        .encode_chat_prompt(&[ChatMessage::new(Role::User, "")])
        .unwrap();
    assert_eq!(empty.context(), empty.tokens().len() - 1);

    let whole: Vec<Vec<u32>> = prompts.iter().map(|p| p.tokens().to_vec()).collect();
    let reference = m.letter_logprobs(&whole).unwrap();
    let fresh = model().letter_logprobs(&prompts[2..3]).unwrap()[0];
    let batched = m.letter_logprobs(&prompts).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let one = m.letter_logprobs(std::slice::from_ref(p)).unwrap()[0];
        for k in 0..4 {
            for (what, ours) in [("alone", one[k]), ("batched", batched[i][k])] {
                assert!(
                    (ours - reference[i][k]).abs() < TOL,
                    "prompt {i}, letter {k}, {what}: {ours} against the whole prompt's {}",
                    reference[i][k]
                );
            }
        }
        if i == 2 {
            assert_eq!(one, fresh, "after other prompts, against a fresh model");
        }
    }
    let full = m.next_token_logprobs(&prompts).unwrap();
    let full_reference = m.next_token_logprobs(&whole).unwrap();
    for (a, b) in full.iter().zip(&full_reference) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            f64::from(worst) < TOL,
            "next-token log-probabilities differ by {worst}"
        );
    }
    // Contexts that differ within a batch: each row after its own context, the same bits as
    // alone, and within rounding of the whole prompt.
    let mixed = [
        prompts[0].clone(),
        m.encode_chat_prompt(&chat("Another system message.", PROMPTS[1]))
            .unwrap(),
        ChatPrompt::new(prompts[2].tokens().to_vec(), 0),
    ];
    let mixed_reference = m
        .letter_logprobs(
            &mixed
                .iter()
                .map(|p| p.tokens().to_vec())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let together = m.letter_logprobs(&mixed).unwrap();
    for (i, p) in mixed.iter().enumerate() {
        assert_eq!(
            together[i],
            m.letter_logprobs(std::slice::from_ref(p)).unwrap()[0]
        );
        for k in 0..4 {
            assert!(
                (together[i][k] - mixed_reference[i][k]).abs() < TOL,
                "row {i}"
            );
        }
    }
    assert_eq!(
        together[2], mixed_reference[2],
        "no context: the whole prompt"
    );
    // A context that leaves nothing to score is none.
    assert_eq!(ChatPrompt::new(vec![1, 2, 3], 3).context(), 0);
    assert_eq!(ChatPrompt::new(vec![1, 2, 3], 2).context(), 2);
}

/// An adapter attached through `model_mut` changes every key and value: the contexts kept
/// before are dropped, not reused.
#[test]
fn attaching_an_adapter_drops_the_kept_contexts() {
    let mut m = model();
    let p = m.encode_chat_prompt(&chat(SYSTEM, PROMPTS[0])).unwrap();
    let before = m.letter_logprobs(std::slice::from_ref(&p)).unwrap()[0];
    let params = attach_lora(m.model_mut(), &LoraConfig::default(), 7).unwrap();
    for q in &params {
        q.b.set(&(q.b.ones_like().unwrap() * 0.05).unwrap())
            .unwrap();
    }
    let with_context = m.letter_logprobs(std::slice::from_ref(&p)).unwrap()[0];
    let whole = m.letter_logprobs(&[p.tokens().to_vec()]).unwrap()[0];
    for k in 0..4 {
        assert!(
            (with_context[k] - whole[k]).abs() < TOL,
            "letter {k}: {} with the kept context against {} whole",
            with_context[k],
            whole[k]
        );
    }
    assert_ne!(
        before, whole,
        "the adapter changes nothing: the test is vacuous"
    );
}
