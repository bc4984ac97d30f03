"""Where images and pairs come from: noise, |CTF|, synthetic pairs from photographs (ours and an
independent generator), synthetic particles, particle stacks and the pairs drawn from them."""
