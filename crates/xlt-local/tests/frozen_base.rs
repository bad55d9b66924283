//! Training keeps the base model out of the gradients: a backward pass through a model with
//! LoRA adapters gives every adapter tensor a gradient and no base weight one (candle's own
//! `matmul` would compute and hold a weight-sized gradient for every frozen layer).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use xlt_local::testing::{SMOLLM2_TEMPLATE, config, random_model, tokenizer};
use xlt_local::{
    ChatTemplate, LoraConfig, Model, Ops, assistant_nll, attach_lora, encode_example, lora_params,
};
use xlt_provider::{ChatMessage, Role};

#[test]
fn a_backward_pass_gives_the_adapters_gradients_and_the_base_weights_none() {
    let cfg = config("llama");
    // Base weights as plain tensors, as read from a file.
    let (varmap, _) = random_model(&cfg, Ops::Differentiable);
    let weights = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
        .collect();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let mut model = Model::new(&cfg, Ops::Differentiable, vb).unwrap();
    attach_lora(&mut model, &LoraConfig::default(), 0).unwrap();
    // lora_B starts at zero, where lora_A gets no gradient: give it values.
    for p in lora_params(&model) {
        let b = p.b.as_tensor();
        p.b.set(&(b.ones_like().unwrap() * 0.01).unwrap()).unwrap();
    }
    let template = ChatTemplate::new(SMOLLM2_TEMPLATE, "", "<|im_end|>").unwrap();
    let example = encode_example(
        &tokenizer(),
        &template,
        &[
            ChatMessage::new(Role::User, "What is 2 + 2?"),
            ChatMessage::new(Role::Assistant, "B"),
        ],
    )
    .unwrap();
    let (nll, _) = assistant_nll(&model, &[&example]).unwrap();
    let grads = nll.backward().unwrap();
    for p in lora_params(&model) {
        for (half, v) in [("lora_A", &p.a), ("lora_B", &p.b)] {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{} {half}: no gradient", p.module));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{} {half}: zero gradient", p.module);
        }
    }
    // What else the store holds are gradients of leaves that are not trained (norm scales,
    // rotary tables, masks): none has the shape of a projection's weight or its transpose,
    // which is what candle's matmul would leave for every frozen layer.
    let adapters: std::collections::HashSet<_> = lora_params(&model)
        .iter()
        .flat_map(|p| [p.a.as_tensor().id(), p.b.as_tensor().id()])
        .collect();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for (_, lin) in model.linears() {
        let (out, inp) = lin.weight().dims2().unwrap();
        shapes.push(vec![out, inp]);
        shapes.push(vec![inp, out]);
    }
    // The output projection (untied for llama): (vocab, hidden).
    shapes.push(vec![cfg.vocab_size, cfg.hidden_size]);
    shapes.push(vec![cfg.hidden_size, cfg.vocab_size]);
    let mut others = 0;
    for id in grads.get_ids() {
        if adapters.contains(id) {
            continue;
        }
        others += 1;
        let dims = grads.get_id(*id).unwrap().dims().to_vec();
        assert!(
            !shapes.contains(&dims),
            "a gradient of shape {dims:?} is held for a frozen weight"
        );
    }
    assert!(others < 100, "{others} gradients of untrained tensors");
}
