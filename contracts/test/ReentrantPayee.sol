// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

interface IPaymentChannel {
    function claim(bytes32 id, uint256 amount, bytes calldata signature) external;
}

/// A payee contract that, when paid in the native coin, calls `claim` again with the same
/// voucher from inside the payment: the channel must have recorded the claim before paying, so
/// the inner call pays nothing. It records that it tried and whether the inner call succeeded.
contract ReentrantPayee {
    IPaymentChannel public immutable channels;
    bytes32 private id;
    uint256 private amount;
    bytes private signature;
    bool public reentered;
    bool public innerSucceeded;

    constructor(IPaymentChannel channels_) {
        channels = channels_;
    }

    function claim(bytes32 id_, uint256 amount_, bytes calldata signature_) external {
        id = id_;
        amount = amount_;
        signature = signature_;
        channels.claim(id_, amount_, signature_);
    }

    receive() external payable {
        if (reentered) return;
        reentered = true;
        (bool ok,) = address(channels).call(abi.encodeCall(IPaymentChannel.claim, (id, amount, signature)));
        innerSucceeded = ok;
    }
}
