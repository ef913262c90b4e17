//! Compile bombs: small components whose shape makes compilers spend memory and time far
//! beyond their size. Encoded byte by byte (the text format's parser would recurse as deep
//! as the nesting), each as a component holding one core module.

/// Unsigned LEB128.
fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A core module of `bodies.len()` functions of type `() -> ()`; each body is given without
/// its size prefix (locals declaration first).
pub fn core_module(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module);
    let mut functions = Vec::new();
    leb(bodies.len() as u64, &mut functions);
    functions.extend(std::iter::repeat_n(0u8, bodies.len()));
    section(3, &functions, &mut module);
    let mut code = Vec::new();
    leb(bodies.len() as u64, &mut code);
    for body in bodies {
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(body);
    }
    section(10, &code, &mut module);
    module
}

/// A component that only embeds `module` (component section 1: a core module).
pub fn component_of(module: &[u8]) -> Vec<u8> {
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, module, &mut component);
    component
}

/// A body of `depth` nested `block`s (or `loop`s), nothing inside.
pub fn nested(depth: usize, opcode: u8) -> Vec<u8> {
    let mut body = vec![0u8]; // no locals
    for _ in 0..depth {
        body.extend_from_slice(&[opcode, 0x40]);
    }
    body.extend(std::iter::repeat_n(0x0b, depth + 1));
    body
}

/// `block`.
pub const BLOCK: u8 = 0x02;
/// `loop`.
pub const LOOP: u8 = 0x03;

/// A body declaring `count` i64 locals and doing nothing with them.
pub fn locals(count: u32) -> Vec<u8> {
    let mut body = Vec::new();
    leb(1, &mut body);
    leb(u64::from(count), &mut body);
    body.push(0x7e);
    body.push(0x0b);
    body
}

/// The bombs by name: one component each.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "deep-blocks",
            component_of(&core_module(&[nested(300_000, BLOCK)])),
        ),
        (
            "deep-loops",
            component_of(&core_module(&[nested(100_000, LOOP)])),
        ),
        ("many-locals", component_of(&core_module(&[locals(45_000)]))),
        (
            "many-functions",
            component_of(&core_module(&vec![vec![0, 0x0b]; 400_000])),
        ),
    ]
}

/// A bomb that passes the structural pre-check under the default limits but costs the
/// compiler far more than its size: many functions, each nested just under the limit.
pub fn within_precheck(functions: usize, depth: usize) -> Vec<u8> {
    let body = nested(depth, LOOP);
    component_of(&core_module(&vec![body; functions]))
}
