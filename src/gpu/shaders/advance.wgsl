// Moves the step counter to the next entry of the step table (its own dispatch, after every reader of it).
@group(0) @binding(0) var<storage, read_write> counter: array<u32>;

@compute @workgroup_size(1)
fn main() {
    counter[0] = counter[0] + 1u;
}
